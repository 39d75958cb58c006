"""Every value is checked where it enters: refused in one line, nothing written or run."""

from __future__ import annotations

import pytest

from conftest import one_line_error


@pytest.mark.parametrize(
    ("setting", "written", "message"),
    [
        ("serve.port=70000", "70000", "serve.port must be a port from 1 to 65535, not 70000"),
        ("serve.port=-1", "-1", "serve.port must be a port from 1 to 65535, not -1"),
        ("serve.port=0", "0", "serve.port must be a port from 1 to 65535, not 0"),
        ("serve.supervise.backoff=nan", "nan", "serve.supervise.backoff must be a number"),
        ("serve.supervise.ready-timeout=-5", "-5", "serve.supervise.ready-timeout must be"),
        ("serve.control-plane.nats-port=2379", "2379", "are both port 2379"),
        ("serve.log-level=loud", '"loud"', "serve.log-level must be one of error, warn, info"),
    ],
)
def test_bad_stack_values_are_refused_where_they_enter(dynix, tmp_path, setting, written, message):
    path = tmp_path / "dynix.toml"
    assert message in one_line_error(dynix("serve", "init", path, "--set", setting))
    assert not path.exists()
    # the same value written by hand is refused when the file is read
    key = setting.split("=", 1)[0]
    table, name = key.rsplit(".", 1)
    path.write_text(f"[{table}]\n{name} = {written}\n")
    assert message in one_line_error(dynix("serve", "--dry-run", "--config", path))


def test_image_created_must_be_rfc3339(dynix, tmp_path):
    for value in ("yesterday", "2025-13-01T00:00:00Z", "2025-05-01"):
        args = ("image", "build", "/nix/store/x", "--created", value, "-o", f"oci:{tmp_path}/i")
        assert "--created" in one_line_error(dynix(*args))
    assert list(tmp_path.iterdir()) == []


def test_options_are_not_passed_to_nix_as_installables(dynix, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[caches.team]\nurl = "file://{tmp_path}/cache"\n')
    for args in (
        ["build", "--config", config, "--", "--dry-run", "."],
        ["cache", "status", "--config", config, "--", "--impure"],
        ["image", "build", "-o", f"oci:{tmp_path}/img", "--", "--dry-run"],
    ):
        proc = dynix(*args, cwd=tmp_path)
        assert "is not an installable: it would reach Nix as an option" in one_line_error(proc)
        assert proc.stdout == ""
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
def test_a_doctor_timeout_is_a_number_of_seconds_above_0(dynix, value):
    proc = dynix("doctor", "--timeout", value)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Invalid value for '--timeout'" in proc.stderr


def test_a_model_name_is_one_line(dynix, tmp_path):
    state = tmp_path / "s"
    proc = dynix("serve", "--dry-run", "--state-dir", state, "--model", "m\nFrontend: {}")
    assert "serve.model must be one line, without control characters" in one_line_error(proc)
    config = tmp_path / "dynix.toml"
    config.write_text('[serve]\nserved-model-name = "m\\tx"\n')
    proc = dynix("serve", "--dry-run", "--state-dir", state, "--config", config)
    assert "serve.served-model-name must be one line" in one_line_error(proc)
    assert not state.exists()

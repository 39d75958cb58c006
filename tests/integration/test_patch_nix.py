"""patches/default.nix evaluated by real Nix: the series each package's derivation will get."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import PATCHES, nix
from dynix import patches

EXPECTED = {
    "vllm": [
        "pin:dynamo-vllm-patch",
        "0001-requirements-cuda-unpin-numba",
        "0002-use-existing-torch",
        "0003-platforms-look-up-vllm-distribution",
        "0004-pynvml-find-the-nixos-driver-link",
        "0005-setup-pass-nix-cmake-flags",
    ],
    "dynamo": ["0001-pyproject-unpin-pytest", "0002-frontend-listen-on-configured-host"],
    "nixl": [],
}


def evaluate(expr: str, root=PATCHES) -> subprocess.CompletedProcess:
    return nix(
        "eval",
        "--json",
        "--impure",
        "--expr",
        f"let p = import {root} {{ }}; in {expr}",
        check=False,
    )


def names(package: str, root=PATCHES):
    proc = evaluate(f'map (e: e.name or "pin:${{e.pin}}") (p.series "{package}")', root)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_parses():
    subprocess.run(
        ["nix-instantiate", "--parse", str(PATCHES / "default.nix")],
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_series_names_in_order(package):
    assert names(package) == EXPECTED[package]


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_nix_and_dynix_read_the_same_series(package):
    python = [f"pin:{e.pin}" if e.pin else e.name for e in patches.read_series(PATCHES, package)]
    assert names(package) == python


def test_packages():
    proc = evaluate("p.packages")
    assert json.loads(proc.stdout) == ["dynamo", "nixl", "vllm"]


def test_resolve_puts_fetched_pins_in_place():
    proc = evaluate('map toString (p.resolve (name: "fetched:" + name) "vllm")')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        "fetched:dynamo-vllm-patch",
        *(str(PATCHES / "vllm" / f"{n}.patch") for n in EXPECTED["vllm"][1:]),
    ]


def test_file_entries_are_paths_that_nix_can_copy():
    proc = evaluate('map (e: builtins.readFile e.file) (p.series "dynamo")')
    assert proc.returncode == 0, proc.stderr
    texts = json.loads(proc.stdout)
    folder = PATCHES / "dynamo"
    assert texts == [(folder / f"{name}.patch").read_text() for name in EXPECTED["dynamo"]]


def test_missing_patch_file_is_a_clear_evaluation_error(tmp_path):
    root = tmp_path / "patches"
    shutil.copytree(PATCHES, root)
    series = root / "vllm" / "series"
    series.write_text(series.read_text() + "0004-not-there.patch\n")
    proc = evaluate('p.series "vllm"', root)
    assert proc.returncode != 0
    line = len(series.read_text().splitlines())
    assert f"patches/vllm/series:{line}: no patch file '0004-not-there.patch'" in proc.stderr


def test_bad_line_and_unknown_package(tmp_path):
    root = tmp_path / "patches"
    shutil.copytree(PATCHES, root)
    (root / "dynamo" / "series").write_text("# ok\ntwo words\n")
    proc = evaluate('p.series "dynamo"', root)
    assert "patches/dynamo/series:2: expected one patch file name or pin:NAME" in proc.stderr
    proc = evaluate('p.series "nope"', root)
    assert "no patch series for 'nope' (series: dynamo, nixl, vllm)" in proc.stderr

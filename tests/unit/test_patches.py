"""Reading series files and patch headers (dynix.patches, the parsing half of dynix.patching)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import PATCHES, REPO
from dynix import patches
from dynix.errors import DynixError
from dynix.patching import failures, touched_paths


def labels(package: str, root: Path = PATCHES) -> list[str]:
    return [e.label for e in patches.read_series(root, package)]


def test_the_project_series():
    assert labels("vllm") == [
        "pin:dynamo-vllm-patch",
        "0001-requirements-cuda-unpin-numba.patch",
        "0002-use-existing-torch.patch",
        "0003-platforms-look-up-vllm-distribution.patch",
        "0004-pynvml-find-the-nixos-driver-link.patch",
        "0005-setup-pass-nix-cmake-flags.patch",
    ]
    assert labels("dynamo") == [
        "0001-pyproject-unpin-pytest.patch",
        "0002-frontend-listen-on-configured-host.patch",
    ]
    assert labels("nixl") == []
    assert patches.packages(PATCHES) == ["dynamo", "nixl", "vllm"]


def test_every_project_patch_has_a_header_before_its_first_file():
    for package in patches.packages(PATCHES):
        for entry in patches.read_series(PATCHES, package):
            if entry.path is None:
                continue
            text = entry.path.read_text()
            header = text[: text.index("\n--- a/")]
            assert "Why:" in header and "Upstream status:" in header, entry.path
            assert not any(
                line.startswith(("diff ", "--- ", "+++ ", "@@", "Index:", "*** "))
                for line in header.splitlines()
            ), entry.path


def make(tmp_path: Path, series: str, files: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / "patches" / "pkg"
    folder.mkdir(parents=True)
    (folder / "series").write_text(series)
    for name in files:
        (folder / name).write_text("--- a/x\n+++ b/x\n")
    return tmp_path / "patches"


def test_grammar_comments_blank_lines_and_pins(tmp_path):
    root = make(
        tmp_path,
        "# a comment\n\n  pin:upstream-fix   # trailing comment\n0001-a.patch\n\t\n0002-b.diff\n",
        ("0001-a.patch", "0002-b.diff"),
    )
    entries = patches.read_series(root, "pkg")
    assert [(e.name, e.line, e.pin) for e in entries] == [
        ("upstream-fix", 3, "upstream-fix"),
        ("0001-a", 4, None),
        ("0002-b.diff", 6, None),
    ]
    assert entries[1].path == root / "pkg" / "0001-a.patch"


@pytest.mark.parametrize(
    "line,message",
    [
        ("0009-missing.patch", "series:2: no patch file '0009-missing.patch'"),
        ("two words.patch", "series:2: expected one patch file name or pin:NAME"),
        ("../escape.patch", "is not a file name"),
        ("pin:", "series:2: 'pin:' must be followed by the name of a pin"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    root = make(tmp_path, f"0001-a.patch\n{line}\n", ("0001-a.patch",))
    with pytest.raises(DynixError, match=message.replace(".", r"\.").replace("(", r"\(")):
        patches.read_series(root, "pkg")


def test_unknown_package_lists_the_series(tmp_path):
    with pytest.raises(DynixError, match=r"no patch series for 'nope' .*\(series: dynamo, nixl"):
        patches.read_series(PATCHES, "nope")


def test_default_dir_env_then_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNIX_PATCHES", str(tmp_path))
    assert patches.default_dir() == tmp_path
    monkeypatch.delenv("DYNIX_PATCHES")
    assert patches.default_dir(REPO / "tests" / "unit") == PATCHES
    # Outside any checkout: the copy an installed dynix carries, else a clear error.
    monkeypatch.delenv("DYNIX_DATA_DIR", raising=False)
    with pytest.raises(DynixError, match="no patches folder found"):
        patches.default_dir(tmp_path)
    (tmp_path / "share" / "patches").mkdir(parents=True)
    monkeypatch.setenv("DYNIX_DATA_DIR", str(tmp_path / "share"))
    assert patches.default_dir(tmp_path) == tmp_path / "share" / "patches"


def test_touched_paths_skips_hunk_bodies_and_dev_null():
    diff = "\n".join(
        [
            "diff --git a/src/x.c b/src/x.c",
            "--- a/src/x.c\t2025-01-01 00:00:00",
            "+++ b/src/x.c\t2025-01-01 00:00:00",
            "@@ -1,2 +1,2 @@",
            " keep",
            "--- looks like a header but is a removed line",
            "+++ and an added one",
            "\\ No newline at end of file",
            "--- /dev/null",
            "+++ b/new/file.py",
            "@@ -0,0 +1 @@",
            "+print()",
            '--- "a/with space"',
            '+++ "b/with space"',
            "@@ -1 +1 @@",
            "-a",
            "+b",
        ]
    )
    assert touched_paths(diff) == ["src/x.c", "new/file.py", "with space"]


def test_failures_from_gnu_patch_output():
    output = "\n".join(
        [
            "patching file a.txt",
            "Hunk #2 FAILED at 7.",
            "1 out of 2 hunks FAILED",
            "patching file b.txt",
            "Reversed (or previously applied) patch detected!  Skipping patch.",
            "The next patch would create the file c.txt,",
            "which already exists!  Skipping patch.",
            "can't find file to patch at input line 30",
            "Perhaps you used the wrong -p or --strip option?",
            "The text leading up to this was:",
            "--------------------------",
            "|--- a/d.txt",
            "|+++ b/d.txt",
            "--------------------------",
            "No file to patch.  Skipping patch.",
        ]
    )
    assert failures(output) == [
        ("a.txt", "hunk #2 does not match"),
        ("b.txt", "already applied"),
        ("c.txt", "already exists"),
        ("d.txt", "no such file in the tree"),
    ]
    assert failures("patch: **** Only garbage was found in the patch input.") == [
        (None, "Only garbage was found in the patch input.")
    ]

"""The vLLM series on the real vLLM 0.8.4 sdist from PyPI, applied by `dynix patch`.

Dynamo's patch (pin dynamo-vllm-patch) lives on GitHub, which the tests cannot reach. In its
place the tests use a stand-in that makes exactly the change Dynamo's patch makes to
vllm/platforms/__init__.py, and nothing else: its hunk is Dynamo's hunk for that file, and the
file it produces has the blob id Dynamo's patch records for it (08dbc0e78). The stand-in is
given with --upstream-patch and recorded in a copy of the pins file, so dynix still checks its
hash. Our patches' context in that file is therefore checked against Dynamo's real result; that
Dynamo's patch leaves requirements/ and pyproject.toml alone (as our other patches assume) is
known from reading it, not re-checked here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PATCHES, PINS, REPO, one_line_error, tree_digest
from dynix.patches import read_series

pytestmark = pytest.mark.network

PLATFORMS = "vllm/platforms/__init__.py"
# Dynamo's hunk for vllm/platforms/__init__.py (Dynamo v0.2.0, vllm_v0.8.4-dynamo-kv-disagg).
STAND_IN = """\
--- a/vllm/platforms/__init__.py
+++ b/vllm/platforms/__init__.py
@@ -20,7 +20,8 @@ def vllm_version_matches_substr(substr: str) -> bool:
     \"\"\"
     from importlib.metadata import PackageNotFoundError, version
     try:
-        vllm_version = version("vllm")
+        logger.warning("Using ai_dynamo_vllm")
+        vllm_version = version("ai_dynamo_vllm")
     except PackageNotFoundError as e:
         logger.warning(
             "The vLLM package was not found, so its version could not be "
"""
# Files use_existing_torch.py rewrites that a CUDA build reads (setup.py: cuda.txt -> common.txt;
# the build requirements: pyproject.toml, build.txt).
CUDA_BUILD_FILES = [
    "pyproject.toml",
    "requirements/build.txt",
    "requirements/cuda.txt",
    "requirements/common.txt",
]


def git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sri(path: Path) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


@pytest.fixture
def setup(tmp_path, vllm_sdist):
    """A fresh copy of the sdist, the stand-in, and a pins file that pins the stand-in."""
    tree = tmp_path / "vllm-0.8.4"
    shutil.copytree(vllm_sdist, tree, symlinks=True)
    stand_in = tmp_path / "dynamo-stand-in.patch"
    stand_in.write_text(STAND_IN)
    pins = tmp_path / "pins.toml"
    pinned = re.search(
        r'\[dynamo-vllm-patch\][^\[]*?hash = "([^"]+)"', PINS.read_text(), re.S
    ).group(1)
    pins.write_text(PINS.read_text().replace(pinned, sri(stand_in)))
    args = ["--upstream-patch", f"dynamo-vllm-patch={stand_in}"]
    return tree, args, {"DYNIX_PINS": str(pins)}, stand_in


def test_the_stand_in_makes_dynamos_change(vllm_sdist, tmp_path):
    tree = tmp_path / "t"
    (tree / "vllm" / "platforms").mkdir(parents=True)
    shutil.copy(vllm_sdist / PLATFORMS, tree / PLATFORMS)
    assert git_blob(tree / PLATFORMS).startswith("0ed221043")  # Dynamo's patch's "before"
    subprocess.run(
        ["patch", "-p1", "--fuzz=0", "-d", tree],
        input=STAND_IN,
        text=True,
        check=True,
        capture_output=True,
    )
    assert git_blob(tree / PLATFORMS).startswith("08dbc0e78")  # and its "after"


def assert_setup_passes_cmake_flags(tree: Path) -> None:
    """setup.py hands the derivation's cmakeFlags to cmake, after its own arguments."""
    setup_py = (tree / "setup.py").read_text()
    start, end = setup_py.index("    def configure("), setup_py.index("    def build_extensions(")
    configure = setup_py[start:end]
    ours = configure.index('cmake_args += os.environ.get("cmakeFlags", "").split()')
    assert configure.index("-DCMAKE_CUDA_COMPILER=") < ours
    assert ours < configure.index("subprocess.check_call(")
    assert 'json.load(f).get("cmakeFlags", [])' in configure


def test_series_applies_to_the_sdist(dynix, setup):
    tree, args, env, _ = setup
    proc = dynix("patch", "vllm", tree, *args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [p["name"] for p in result["applied"]] == [
        "dynamo-vllm-patch",
        "0001-requirements-cuda-unpin-numba",
        "0002-use-existing-torch",
        "0003-platforms-look-up-vllm-distribution",
        "0004-pynvml-find-the-nixos-driver-link",
        "0005-setup-pass-nix-cmake-flags",
    ]
    pynvml = (tree / "vllm/third_party/pynvml.py").read_text()
    assert 'nvmlLib = CDLL("/run/opengl-driver/lib/libnvidia-ml.so.1")' in pynvml
    assert_setup_passes_cmake_flags(tree)

    cuda = (tree / "requirements/cuda.txt").read_text().splitlines()
    assert "numba" in cuda
    assert not [line for line in cuda if re.match(r"\s*numba\s*[=<>~!]", line)]

    for name in CUDA_BUILD_FILES:
        text = (tree / name).read_text()
        assert "torch" not in text.lower(), name

    platforms = (tree / PLATFORMS).read_text()
    assert 'vllm_version = version("vllm")' in platforms
    assert 'version("ai_dynamo_vllm")' not in platforms
    # The very file the hand-written ARM procedure produced (blob 8d48d488d in its diff).
    assert git_blob(tree / PLATFORMS).startswith("8d48d488d")


def test_torch_patch_equals_use_existing_torch_on_cuda_build_files(dynix, setup):
    """Run the sdist's own use_existing_torch.py after the series: it must find nothing left
    to remove in the files a CUDA build reads."""
    tree, args, env, _ = setup
    assert dynix("patch", "vllm", tree, *args, env=env).returncode == 0
    before = {name: (tree / name).read_bytes() for name in CUDA_BUILD_FILES}
    subprocess.run(
        [sys.executable, "use_existing_torch.py"], cwd=tree, check=True, capture_output=True
    )
    assert {name: (tree / name).read_bytes() for name in CUDA_BUILD_FILES} == before


def test_applying_twice_reports_the_series_as_applied(dynix, setup):
    tree, args, env, _ = setup
    assert dynix("patch", "vllm", tree, *args, env=env).returncode == 0
    before = tree_digest(tree)
    proc = dynix("patch", "vllm", tree, *args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "already-applied"
    assert tree_digest(tree) == before


def test_dynamos_patch_applied_by_hand_is_recognised(dynix, setup):
    tree, args, env, stand_in = setup
    subprocess.run(["patch", "-p1", "-d", tree, "-i", stand_in], check=True, capture_output=True)
    proc = dynix("patch", "vllm", tree, *args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [p["name"] for p in result["alreadyApplied"]] == ["dynamo-vllm-patch"]
    assert len(result["applied"]) == 5
    assert git_blob(tree / PLATFORMS).startswith("8d48d488d")


def test_a_changed_requirement_fails_before_anything_changes(dynix, setup):
    tree, args, env, _ = setup
    build = tree / "requirements/build.txt"
    build.write_text(build.read_text().replace("torch==2.6.0", "torch==2.7.0"))
    before = tree_digest(tree)
    proc = dynix("patch", "vllm", tree, *args, env=env)
    assert one_line_error(proc) == (
        f"Error: 0002-use-existing-torch.patch does not apply to {tree}: requirements/build.txt: "
        f"hunk #1 does not match; nothing in {tree} was changed"
    )
    assert tree_digest(tree) == before


def test_without_the_pinned_dynamo_patch_hash_the_stand_in_is_refused(dynix, setup):
    tree, args, _, stand_in = setup
    proc = dynix("patch", "vllm", tree, *args)  # the real pins file
    assert f"{stand_in} has hash {sri(stand_in)}, but pin dynamo-vllm-patch is" in (
        one_line_error(proc)
    )


# Dynamo's real patch, where this checkout sits beside the project's shared upstream files.
REAL_DYNAMO_PATCH = (
    REPO.parent
    / "shared"
    / "upstream"
    / "dynamo-v0.2.0"
    / "vllm_v0.8.4-dynamo-kv-disagg-patch.patch"
)


def test_series_with_dynamos_real_patch_applies_with_no_fuzz(tmp_path, vllm_sdist):
    """The whole series, Dynamo's real patch first, applied to the real sdist with
    `patch --fuzz=0` as the derivation does; then what the fixes promise."""
    if not REAL_DYNAMO_PATCH.is_file():
        pytest.skip(f"Dynamo's vLLM patch is not at {REAL_DYNAMO_PATCH} (only beside the project)")
    assert sri(REAL_DYNAMO_PATCH) == pinned_hash("dynamo-vllm-patch")
    tree = tmp_path / "vllm-0.8.4"
    shutil.copytree(vllm_sdist, tree, symlinks=True)
    files = [REAL_DYNAMO_PATCH] + [e.path for e in read_series(PATCHES, "vllm") if e.path]
    assert len(files) == 6
    for patch_file in files:
        proc = subprocess.run(
            ["patch", "-p1", "--fuzz=0", "--no-backup-if-mismatch", "-d", tree, "-i", patch_file],
            text=True,
            capture_output=True,
        )
        assert proc.returncode == 0, (patch_file.name, proc.stdout, proc.stderr)
        # Applied exactly: no hunk needed an offset or fuzz.
        assert "offset" not in proc.stdout and "fuzz" not in proc.stdout, proc.stdout

    # Dynamo's own files are there ...
    assert (tree / "vllm/remote_prefill.py").is_file()
    assert (tree / "vllm/distributed/device_communicators/nixl.py").is_file()
    # ... and the fixes did what they say.
    platforms = (tree / PLATFORMS).read_text()
    assert 'vllm_version = version("vllm")' in platforms
    assert 'version("ai_dynamo_vllm")' not in platforms
    cuda = (tree / "requirements/cuda.txt").read_text().splitlines()
    assert "numba" in cuda
    assert not [line for line in cuda if re.match(r"\s*numba\s*[=<>~!]", line)]
    for name in CUDA_BUILD_FILES:
        assert "torch" not in (tree / name).read_text().lower(), name
    assert_setup_passes_cmake_flags(tree)


def pinned_hash(name: str) -> str:
    pin = re.search(rf'\[{re.escape(name)}\][^\[]*?hash = "([^"]+)"', PINS.read_text(), re.S)
    return pin.group(1)

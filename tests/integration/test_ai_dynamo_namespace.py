"""`.#ai-dynamo`'s bin/dynamo sees `dynamo.runtime`: the two PyPI wheels, laid out as Nix lays
out two Python packages.

In nixpkgs each Python package is its own store path, and a program's wrapper puts each one's
site-packages on sys.path separately. ai-dynamo's wheel has a regular `dynamo/__init__.py`;
ai-dynamo-runtime's `dynamo/` (runtime, llm, _core) has none. The test copies the `dynamo` tree of
each installed wheel (from its RECORD) into a folder of its own, as two store paths, and runs
Python on exactly those folders (plus one with every other installed package). With the SDK's
`__init__.py` the regular package hides the runtime's half; removed, the way the recipe's
postInstall removes it (the path is read from pkgs/ai-dynamo/package.nix), both halves are one
namespace package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import REPO

RECIPE = REPO / "pkgs" / "ai-dynamo" / "package.nix"
PROBE = (
    "import dynamo.runtime, dynamo.llm, importlib.util as u; "
    "print(u.find_spec('dynamo.sdk').origin)"
)


def removed_by_recipe() -> list[str]:
    """The site-packages paths ai-dynamo's postInstall removes with a plain `rm`."""
    return re.findall(r'rm "\$out/\$\{python\.sitePackages\}/([^"]+)"', RECIPE.read_text())


def wheel(name: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"the {name} 0.2.0 wheel is not installed in this Python ({sys.prefix})")


def copy_dynamo_tree(dist: metadata.Distribution, dest: Path) -> Path:
    """The files of `dist` under dynamo/ (no bytecode), copied into dest as its site-packages."""
    files = [f for f in dist.files if f.parts[0] == "dynamo" and "__pycache__" not in f.parts]
    assert files, dist.metadata["Name"]
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f.locate(), target)
    return dest


@pytest.fixture
def store_paths(tmp_path):
    sdk_dist, runtime_dist = wheel("ai-dynamo"), wheel("ai-dynamo-runtime")
    assert sdk_dist.version == runtime_dist.version == "0.2.0"
    sdk = copy_dynamo_tree(sdk_dist, tmp_path / "ai-dynamo")
    runtime = copy_dynamo_tree(runtime_dist, tmp_path / "ai-dynamo-runtime")
    # Everything else the imports need (pydantic, ...), without the merged `dynamo` folder.
    site = Path(sdk_dist.locate_file(""))
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in site.iterdir():
        if entry.name != "dynamo" and not entry.name.startswith("ai_dynamo"):
            (deps / entry.name).symlink_to(entry)
    return sdk, runtime, deps


def probe(*paths: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, paths)))
    # -S: no site-packages of this Python, only the folders given, as in a Nix wrapper.
    return subprocess.run(
        [sys.executable, "-S", "-c", PROBE], env=env, text=True, capture_output=True, cwd=paths[0]
    )


def test_the_recipe_removes_the_sdks_package_marker():
    assert "dynamo/__init__.py" in removed_by_recipe()


def test_with_the_sdks_init_the_runtime_is_hidden(store_paths):
    sdk, runtime, deps = store_paths
    assert (sdk / "dynamo" / "__init__.py").is_file()
    assert not (runtime / "dynamo" / "__init__.py").exists()
    proc = probe(sdk, runtime, deps)
    assert proc.returncode == 1
    assert "No module named 'dynamo.runtime'" in proc.stderr


def test_after_the_recipes_removal_both_halves_are_one_namespace(store_paths):
    sdk, runtime, deps = store_paths
    for rel in removed_by_recipe():
        (sdk / rel).unlink()
    proc = probe(sdk, runtime, deps)
    assert proc.returncode == 0, proc.stderr
    # The SDK's half is still found, in its own store path.
    assert proc.stdout.strip() == str(sdk / "dynamo" / "sdk" / "__init__.py")

"""`dynix patch` as users run it, with real GNU patch and real Nix, on small trees."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import tomlkit

from conftest import PATCHES, PINS, REPO, one_line_error, tree_digest
from dynix.patches import Entry
from dynix.patching import Patch, Plan, apply

DYNAMO_PATCH = "0001-pyproject-unpin-pytest.patch"
FRONTEND_PATCH = "0002-frontend-listen-on-configured-host.patch"
DYNAMO_NAMES = ["0001-pyproject-unpin-pytest", "0002-frontend-listen-on-configured-host"]
# Dynamo v0.2.0's examples/llm frontend, which the second patch changes (see ../shared/upstream).
FRONTEND = REPO.parent / "shared/upstream/dynamo-v0.2.0/examples/llm/components/frontend.py"


def sri(path: Path) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def dynamo_tree(root: Path, pytest_requirement: str = "pytest>=8.3.4") -> Path:
    """A stand-in for the Dynamo v0.2.0 source, which cannot be fetched here: its pyproject.toml
    has, at the same line numbers, the lines the patch touches and its context as they are at
    that release (the dependency list begins with pytest, bentoml, types-psutil, kubernetes; the
    rest of the list is the ai-dynamo 0.2.0 wheel's Requires-Dist). Lines above are padding.
    Its examples/llm frontend is the real file, from ../shared/upstream."""
    if not FRONTEND.is_file():
        pytest.skip(f"needs Dynamo v0.2.0's frontend.py at {FRONTEND} (../shared is absent)")
    lines = [f"# line {n}" for n in range(1, 16)] + [
        "[project]",
        'name = "ai-dynamo"',
        'version = "0.2.0"',
        'description = "Distributed Inference Framework"',
        'readme = "README.md"',
        "authors = [",
        '    { name = "NVIDIA Inc.", email = "sw-dl-dynamo@nvidia.com" },',
        "]",
        'license = { text = "Apache-2.0" }',
        'license-files = ["LICENSE"]',
        'requires-python = ">=3.10"',
        "dependencies = [",
        f'    "{pytest_requirement}",',
        '    "bentoml==1.4.8",',
        '    "types-psutil==7.0.0.20250218",',
        '    "kubernetes==32.0.1",',
        '    "ai-dynamo-runtime==0.2.0",',
        '    "fastapi==0.115.6",',
        '    "distro",',
        '    "typer",',
        '    "circus>=0.17.0",',
        "]",
    ]
    assert lines.index('license-files = ["LICENSE"]') + 1 == 25  # where the hunk starts
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")
    (root / "README.md").write_text("Dynamo\n")
    components = root / "examples" / "llm" / "components"
    components.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FRONTEND, components / "frontend.py")
    return root


def dependencies(tree: Path) -> list[str]:
    return tomlkit.parse((tree / "pyproject.toml").read_text())["project"]["dependencies"].unwrap()


def test_dynamo_series_unpins_pytest(dynix, tmp_path):
    tree = dynamo_tree(tmp_path / "dynamo")
    proc = dynix("patch", "dynamo", tree)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"applied {DYNAMO_PATCH}\napplied {FRONTEND_PATCH}\n"
    deps = dependencies(tree)
    assert deps[0] == "pytest"
    assert deps[1:4] == ["bentoml==1.4.8", "types-psutil==7.0.0.20250218", "kubernetes==32.0.1"]
    assert not any(d.startswith("pytest>") for d in deps)
    assert sorted(p.name for p in tree.iterdir()) == ["README.md", "examples", "pyproject.toml"]
    frontend = (tree / "examples/llm/components/frontend.py").read_text()
    assert '    host: str = "0.0.0.0"\n' in frontend
    assert '"--host",\n                self.frontend_config.host,' in frontend


def test_an_already_patched_tree_is_reported_and_left_alone(dynix, tmp_path):
    tree = dynamo_tree(tmp_path / "dynamo")
    assert dynix("patch", "dynamo", tree).returncode == 0
    before = tree_digest(tree)
    proc = dynix("patch", "dynamo", tree, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "already-applied"
    assert [p["name"] for p in result["alreadyApplied"]] == DYNAMO_NAMES
    assert result["applied"] == []
    assert "nothing to do" in proc.stderr
    assert tree_digest(tree) == before


def test_a_failing_hunk_changes_nothing_and_names_patch_and_file(dynix, tmp_path):
    tree = dynamo_tree(tmp_path / "dynamo", pytest_requirement="pytest>=8.3.5")
    before = tree_digest(tree)
    proc = dynix("patch", "dynamo", tree)
    error = one_line_error(proc)
    assert error == (
        f"Error: {DYNAMO_PATCH} does not apply to {tree}: pyproject.toml: hunk #1 does not "
        f"match; nothing in {tree} was changed"
    )
    assert tree_digest(tree) == before


def test_dry_run_changes_nothing(dynix, tmp_path):
    tree = dynamo_tree(tmp_path / "dynamo")
    before = tree_digest(tree)
    proc = dynix("patch", "dynamo", tree, "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["status"], result["dryRun"]) == ("would-apply", True)
    assert [p["name"] for p in result["pending"]] == DYNAMO_NAMES
    assert result["files"] == ["pyproject.toml", "examples/llm/components/frontend.py"]
    assert tree_digest(tree) == before
    proc = dynix("patch", "dynamo", tree, "--dry-run")
    assert proc.stdout == f"would apply {DYNAMO_PATCH}\nwould apply {FRONTEND_PATCH}\n"


def test_nixl_has_nothing_to_apply(dynix, tmp_path):
    """NIXL's series is empty (its x86_64 GDS path is an option default, set by the build)."""
    tree = tmp_path / "nixl"
    tree.mkdir()
    (tree / "meson_options.txt").write_text("option('gds_path', type: 'string', value: '')\n")
    before = tree_digest(tree)
    proc = dynix("patch", "nixl", tree, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "nothing-to-apply"
    assert "the nixl series is empty" in proc.stderr
    assert tree_digest(tree) == before


def test_usage_errors(dynix, tmp_path):
    proc = dynix("patch", "sglang", tmp_path)
    assert proc.returncode == 2
    assert "Invalid value for '{vllm|dynamo|nixl}'" in proc.stderr

    proc = dynix("patch", "dynamo", tmp_path / "missing")
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr

    (tmp_path / "file").write_text("")
    proc = dynix("patch", "dynamo", tmp_path / "file")
    assert proc.returncode == 2
    assert "is a file" in proc.stderr

    proc = dynix("patch", "dynamo", tmp_path, "--upstream-patch", "dynamo-vllm-patch=x.patch")
    assert proc.returncode == 2
    assert "the dynamo series has no entry pin:dynamo-vllm-patch" in proc.stderr

    proc = dynix("patch", "vllm", tmp_path, "--upstream-patch", "no-equals-sign")
    assert proc.returncode == 2
    assert "expected NAME=FILE" in proc.stderr


def test_a_local_upstream_patch_with_the_wrong_hash_is_refused(dynix, tmp_path):
    tree = tmp_path / "vllm"
    tree.mkdir()
    wrong = tmp_path / "not-dynamos.patch"
    wrong.write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")
    proc = dynix("patch", "vllm", tree, "--upstream-patch", f"dynamo-vllm-patch={wrong}")
    pinned = tomlkit.parse(PINS.read_text())["dynamo-vllm-patch"]["hash"]
    assert one_line_error(proc) == (
        f"Error: {wrong} has hash {sri(wrong)}, but pin dynamo-vllm-patch is {pinned}: "
        "refusing to apply it"
    )
    assert list(tree.iterdir()) == []


# -- a small series of our own, to exercise pins fetched with Nix and multi-patch series -------


def write_series(root: Path, package: str, entries: dict[str, str], order: list[str]) -> Path:
    folder = root / package
    folder.mkdir(parents=True)
    for name, text in entries.items():
        (folder / name).write_text(text)
    (folder / "series").write_text("\n".join(order) + "\n")
    return root


UPSTREAM = "--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n one\n-two\n+TWO\n"
OURS = "\n".join(
    [
        "Ours: header text first, as in the project's patches.",
        "",
        "--- a/a.txt",
        "+++ b/a.txt",
        "@@ -1,2 +1,3 @@",
        " one",
        " TWO",
        "+three",
        "--- /dev/null",
        "+++ b/new/dir/created.txt",
        "@@ -0,0 +1 @@",
        "+created",
        "--- a/b.txt",
        "+++ b/b.txt",
        "@@ -1 +1 @@",
        "-bee",
        "+BEE",
        "",
    ]
)


@pytest.fixture
def small(tmp_path):
    """A patches folder with series `pin:upstream-fix` + one patch, a pins file whose pin is a
    local file:// URL (fetched by Nix like any other), and a tree they apply to."""
    upstream = tmp_path / "upstream-fix.patch"
    upstream.write_text(UPSTREAM)
    patches_root = write_series(
        tmp_path / "patches",
        "vllm",
        {"0001-ours.patch": OURS},
        ["pin:upstream-fix", "0001-ours.patch"],
    )
    pins = tmp_path / "pins.toml"
    pins.write_text(
        f'[upstream-fix]\nkind = "url"\nurl = "file://{upstream}"\nhash = "{sri(upstream)}"\n'
    )
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("one\ntwo\n")
    (tree / "b.txt").write_text("bee\n")
    env = {"DYNIX_PATCHES": str(patches_root), "DYNIX_PINS": str(pins)}
    return tree, env, pins, upstream


def test_a_pin_is_fetched_with_nix_and_checked(dynix, small):
    tree, env, _, upstream = small
    proc = dynix("patch", "vllm", tree, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    applied = json.loads(proc.stdout)["applied"]
    assert applied[0]["source"] == f"file://{upstream}"
    assert applied[0]["hash"] == sri(upstream)
    assert applied[0]["file"].startswith("/nix/store/")
    assert (tree / "a.txt").read_text() == "one\nTWO\nthree\n"
    assert (tree / "new" / "dir" / "created.txt").read_text() == "created\n"


def test_a_fetched_pin_with_the_wrong_hash_is_refused(dynix, small):
    tree, env, pins, upstream = small
    pins.write_text(pins.read_text().replace(sri(upstream), sri(PINS)))
    before = tree_digest(tree)
    proc = dynix("patch", "vllm", tree, env=env)
    assert one_line_error(proc) == (
        f"Error: file://{upstream} has hash {sri(upstream)}, but pin upstream-fix is "
        f"{sri(PINS)}: refusing to apply it"
    )
    assert tree_digest(tree) == before


def test_an_unreachable_pin_suggests_giving_the_file(dynix, small):
    tree, env, pins, upstream = small
    pins.write_text(pins.read_text().replace(f"file://{upstream}", "http://127.0.0.1:9/fix.patch"))
    error = one_line_error(dynix("patch", "vllm", tree, env=env))
    assert error.startswith(
        "Error: cannot fetch pin upstream-fix from http://127.0.0.1:9/fix.patch"
    )
    assert error.endswith("give the file with --upstream-patch upstream-fix=FILE")


def test_a_pin_without_a_hash_is_refused(dynix, small):
    tree, env, pins, upstream = small
    pins.write_text(pins.read_text().replace(sri(upstream), "unresolved"))
    proc = dynix("patch", "vllm", tree, env=env)
    assert "pin upstream-fix has no hash yet" in one_line_error(proc)


def test_a_later_patch_failing_leaves_the_tree_as_it_was(dynix, small):
    """The pinned patch applies, the next one fails on b.txt: nothing may change, not even the
    file the first patch changed or the folder the second would create."""
    tree, env, _, _ = small
    (tree / "b.txt").write_text("wasp\n")
    before = tree_digest(tree)
    proc = dynix("patch", "vllm", tree, env=env)
    assert one_line_error(proc) == (
        f"Error: 0001-ours.patch does not apply to {tree}: b.txt: hunk #1 does not match; "
        f"nothing in {tree} was changed"
    )
    assert tree_digest(tree) == before
    assert not (tree / "new").exists()


def test_a_tree_with_the_first_patches_gets_only_the_rest(dynix, small):
    tree, env, _, _ = small
    (tree / "a.txt").write_text("one\nTWO\n")  # the pinned patch, applied by hand
    proc = dynix("patch", "vllm", tree, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [p["name"] for p in result["alreadyApplied"]] == ["upstream-fix"]
    assert [p["name"] for p in result["applied"]] == ["0001-ours"]
    assert (tree / "a.txt").read_text() == "one\nTWO\nthree\n"
    assert "already has pin:upstream-fix: applied the rest" in proc.stderr


def test_a_symlinked_target_is_refused_before_anything_changes(dynix, small):
    tree, env, _, _ = small
    (tree / "b-real.txt").write_text("bee\n")
    (tree / "b.txt").unlink()
    (tree / "b.txt").symlink_to("b-real.txt")
    before = tree_digest(tree)
    proc = dynix("patch", "vllm", tree, env=env)
    assert "0001-ours.patch does not apply" in one_line_error(proc)
    assert "b.txt: not a regular file" in proc.stderr
    assert tree_digest(tree) == before


def test_apply_restores_the_tree_when_gnu_patch_fails_in_it(tmp_path):
    """The guard behind the scratch run: if patch still fails on the tree itself, the files the
    earlier patches changed are put back and created files and folders removed."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("one\ntwo\n")
    (tree / "b.txt").write_text("wasp\n")
    first = tmp_path / "first.patch"
    first.write_text(UPSTREAM)
    second = tmp_path / "second.patch"
    second.write_text(OURS)
    planned = Plan(
        present=[],
        missing=[
            Patch(Entry("first", 1, path=first), first),
            Patch(Entry("second", 2, path=second), second),
        ],
        files=["a.txt", "new/dir/created.txt", "b.txt"],
    )
    before = tree_digest(tree)
    with pytest.raises(Exception, match="second.patch does not apply .* b.txt: hunk #1"):
        apply(tree, planned)
    assert tree_digest(tree) == before
    assert sorted(p.name for p in tree.iterdir()) == ["a.txt", "b.txt"]
    assert PATCHES.is_dir()  # the project folder is untouched by all this


def test_an_installed_dynix_uses_the_pins_and_patches_it_carries(dynix, tmp_path):
    """Outside a checkout, the Nix package's copies ($DYNIX_DATA_DIR) are used."""
    data = tmp_path / "share" / "dynix"
    data.mkdir(parents=True)
    shutil.copy(PINS, data / "pins.toml")
    shutil.copytree(PATCHES, data / "patches")
    env = {"DYNIX_DATA_DIR": str(data)}
    tree = dynamo_tree(tmp_path / "dynamo")
    proc = dynix("patch", "dynamo", tree, "--json", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    applied = json.loads(proc.stdout)["applied"]
    folder = data / "patches" / "dynamo"
    assert [a["file"] for a in applied] == [str(folder / p) for p in (DYNAMO_PATCH, FRONTEND_PATCH)]

    wrong = tmp_path / "wrong.patch"
    wrong.write_text("not Dynamo's patch\n")
    proc = dynix(
        "patch",
        "vllm",
        tree,
        "--upstream-patch",
        f"dynamo-vllm-patch={wrong}",
        env=env,
        cwd=tmp_path,
    )
    assert "but pin dynamo-vllm-patch is sha256-" in one_line_error(proc)

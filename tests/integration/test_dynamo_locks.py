"""Dynamo's two Cargo.lock files, carried in pkgs/dynamo-runtime/lock/ so that evaluation needs
no fetched source (no import from derivation).

They must be the pinned source's own files: the build compares them too (cargoSetupHook diffs
the source's Cargo.lock against the one importCargoLock vendored from, and stops on a
difference), but only where the source can be fetched. Here they are compared with the exact
upstream copies in ../shared/upstream/dynamo-v0.2.0/ (from the commit the pin `dynamo` records),
and the recipes are checked to read the carried files, never "${src}/…".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO

LOCKS = ["Cargo.lock", "lib/bindings/python/Cargo.lock"]
CARRIED = REPO / "pkgs" / "dynamo-runtime" / "lock"
UPSTREAM = REPO.parent / "shared" / "upstream" / "dynamo-v0.2.0"
DYNAMO_REV = "ca728f6e6b8d526a5d7773a9fc09d9320cee9d37"


@pytest.mark.parametrize("lock", LOCKS)
def test_carried_lock_is_the_pinned_sources(lock):
    if not (UPSTREAM / lock).is_file():
        pytest.skip(f"no upstream copy of Dynamo v0.2.0's {lock} at {UPSTREAM} (a user checkout)")
    readme = (UPSTREAM.parent / "README.md").read_text()
    assert DYNAMO_REV[:8] in readme  # the copies come from the pinned commit
    assert DYNAMO_REV in (REPO / "pkgs" / "pins.toml").read_text()
    assert (CARRIED / lock).read_bytes() == (UPSTREAM / lock).read_bytes()


def test_carried_locks_have_the_crates_recorded_for_v0_2_0():
    text = (CARRIED / "Cargo.lock").read_text()
    assert text.count("[[package]]") == 722
    assert text.count('source = "git+') == 13
    bindings = (CARRIED / LOCKS[1]).read_text()
    assert bindings.count("[[package]]") == 534
    assert 'source = "git+' not in bindings


@pytest.mark.parametrize("recipe", ["package.nix", "python.nix"])
def test_recipes_read_the_carried_locks(recipe):
    text = (REPO / "pkgs" / "dynamo-runtime" / recipe).read_text()
    assert "${src}" not in text
    assert "./lock/" in text


def test_nothing_else_under_lock():
    found = sorted(str(p.relative_to(CARRIED)) for p in Path(CARRIED).rglob("*") if p.is_file())
    assert found == sorted(LOCKS)

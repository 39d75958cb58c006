"""Which installables name store paths directly (taken as given) and which Nix must evaluate."""

from __future__ import annotations

import os

from dynix.nix import is_derivation, store_path_of

P = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-1.0"


def test_a_store_path_or_a_file_inside_one_names_the_store_path():
    assert store_path_of(P) == P
    assert store_path_of(f"{P}/bin/hello") == P


def test_derivations_and_flake_references_are_evaluated():
    assert store_path_of("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-1.0.drv") is None
    assert store_path_of(".#dynamo-arm") is None
    assert store_path_of("nixpkgs#hello") is None


def test_a_result_link_names_what_it_points_to(tmp_path):
    link = tmp_path / "result"
    os.symlink(f"{P}/bin", link)
    assert store_path_of(str(link)) == P


def test_a_link_outside_the_store_is_evaluated(tmp_path):
    (tmp_path / "flake").mkdir()
    os.symlink(tmp_path / "flake", tmp_path / "link")
    assert store_path_of(str(tmp_path / "link")) is None


def test_links_into_a_chroot_store_name_the_logical_path(tmp_path):
    root = tmp_path / "store-root"
    target = root / P.lstrip("/")
    target.mkdir(parents=True)
    os.symlink(target, tmp_path / "result")
    assert store_path_of(str(tmp_path / "result"), store_root=str(root)) == P
    assert store_path_of(str(tmp_path / "result")) is None


def test_a_store_derivation_or_a_link_to_one_is_a_derivation(tmp_path):
    drv = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-1.0.drv"
    assert is_derivation(drv)
    root = tmp_path / "store-root"
    (root / drv.lstrip("/")).parent.mkdir(parents=True)
    (root / drv.lstrip("/")).write_text("Derive(...)")
    os.symlink(root / drv.lstrip("/"), tmp_path / "result.drv")
    assert is_derivation(str(tmp_path / "result.drv"), store_root=str(root))
    for other in (P, ".#hello", "nixpkgs#hello", str(tmp_path)):
        assert not is_derivation(other)

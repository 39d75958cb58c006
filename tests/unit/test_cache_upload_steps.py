"""The order `dynix cache push` uploads paths in: every path after the paths it refers to, the
independent paths of a layer split across processes when there is enough work to split."""

from __future__ import annotations

from dynix.cache import PER_PATH_BYTES, SPLIT_MIN_BYTES, upload_steps
from dynix.nix import PathInfo

MiB = 1024 * 1024


def info(name: str, size: int = MiB, refs: tuple[str, ...] = (), nar: str = "") -> PathInfo:
    path = f"/nix/store/{name:a>32}-{name}"
    return PathInfo(path, nar or f"sha256-{name}", size, [f"/nix/store/{r:a>32}-{r}" for r in refs])


def names(steps: list[list[list[str]]]) -> list[list[list[str]]]:
    return [[sorted(p.rsplit("-", 1)[1] for p in group) for group in step] for step in steps]


def check_order(steps: list[list[list[str]]], missing: list[PathInfo]) -> None:
    """Every missing reference of a path is uploaded in an earlier step, or by the same single
    `nix copy` (which orders its paths itself)."""
    step_of = {p: i for i, step in enumerate(steps) for group in step for p in group}
    assert sorted(step_of) == sorted(p.path for p in missing)
    for p in missing:
        for ref in p.references:
            if ref in step_of and ref != p.path:
                here = step_of[p.path]
                assert step_of[ref] < here or len(steps[here]) == 1, (ref, p.path)


def test_one_job_is_one_copy_of_everything():
    missing = [info("a"), info("b", refs=("a",)), info("c", refs=("b",))]
    assert names(upload_steps(missing, 1)) == [[["a", "b", "c"]]]
    assert upload_steps([], 4) == []


def test_independent_paths_are_split_evenly_and_the_root_follows():
    leaves = [info(f"l{i}") for i in range(8)]
    root = info("root", size=100, refs=tuple(f"l{i}" for i in range(8)))
    steps = upload_steps([*leaves, root], 4)
    assert [len(step) for step in steps] == [4, 1]
    assert all(len(group) == 2 for group in steps[0])
    assert names(steps)[1] == [["root"]]
    check_order(steps, [*leaves, root])


def test_heavy_paths_are_spread_before_light_ones():
    layer = [info("big", 8 * MiB), info("m1", 3 * MiB), info("m2", 3 * MiB), info("s", MiB)]
    steps = upload_steps(layer, 2)
    assert names(steps) == [[["big"], ["m1", "m2", "s"]]]


def test_a_chain_of_single_paths_is_one_copy_that_nix_orders():
    chain = [info("a"), info("b", refs=("a",)), info("c", refs=("a", "b")), info("d", refs=("c",))]
    assert names(upload_steps(chain, 8)) == [[["a", "b", "c", "d"]]]


def test_small_layers_between_big_ones_go_together():
    big0 = [info("x0"), info("y0")]
    small1 = [info("s1", 10, refs=("x0", "y0"))]
    small2 = [info("s2", 10, refs=("s1",)), info("t2", 10, refs=("s1",))]  # two, but tiny
    big3 = [info("x3", refs=("s2", "t2")), info("y3", refs=("t2",))]
    missing = [*big3, *small2, *small1, *big0]  # any order in
    steps = upload_steps(missing, 4)
    assert names(steps) == [[["x0"], ["y0"]], [["s1", "s2", "t2"]], [["x3"], ["y3"]]]
    check_order(steps, missing)


def test_split_threshold():
    tiny = max(1, (SPLIT_MIN_BYTES // 2 - 2 * PER_PATH_BYTES) // 2)
    assert names(upload_steps([info("a", tiny), info("b", tiny)], 4)) == [[["a", "b"]]]
    enough = SPLIT_MIN_BYTES // 2
    assert names(upload_steps([info("a", enough), info("b", enough)], 4)) == [[["a"], ["b"]]]


def test_references_already_in_the_cache_do_not_hold_a_path_back():
    # "base" is not missing: a and b, both referring to it, are one layer
    missing = [info("a", refs=("base",)), info("b", refs=("base", "b"))]  # b refers to itself
    assert names(upload_steps(missing, 2)) == [[["a"], ["b"]]]


def test_paths_with_the_same_contents_stay_in_one_group():
    twins = [info("t1", nar="sha256-same"), info("t2", nar="sha256-same")]
    others = [info("o1"), info("o2")]
    (step,) = upload_steps([*twins, *others], 4)
    assert ["t1", "t2"] in [sorted(g) for g in names([step])[0]]
    assert len(step) == 3


def test_a_deep_closure_needs_no_recursion():
    chain = [info("p0", 10)] + [info(f"p{i}", 10, refs=(f"p{i - 1}",)) for i in range(1, 5000)]
    (step,) = upload_steps(list(reversed(chain)), 4)
    assert len(step) == 1 and len(step[0]) == 5000

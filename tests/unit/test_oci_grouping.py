"""Layer grouping: bounds, determinism, and what it costs to re-push after one change."""

from __future__ import annotations

import random

import pytest

from dynix.oci.grouping import Graph, Node, group, popularity_groups


def path(name: str) -> str:
    return f"/nix/store/{'0' * 32}-{name}"


def random_closure(n: int, seed: int) -> list[Node]:
    rng = random.Random(seed)
    names = [path(f"p{i:04d}") for i in range(n)]
    nodes = []
    for i, name in enumerate(names):
        refs = tuple(rng.sample(names[:i], min(i, rng.randint(0, 5))))
        nodes.append(Node(name, int(rng.lognormvariate(11, 2.5)) + 1, refs))
    return nodes


def test_few_paths_get_one_layer_each_dependencies_first():
    nodes = [
        Node(path("app"), 10, (path("lib"), path("libc"))),
        Node(path("lib"), 20, (path("libc"),)),
        Node(path("libc"), 30, ()),
    ]
    assert group(nodes, 10) == [[path("libc")], [path("lib")], [path("app")]]


@pytest.mark.parametrize("max_layers", [1, 7, 40, 100])
def test_every_path_lands_in_exactly_one_of_at_most_max_layers(max_layers):
    nodes = random_closure(300, 1)
    groups = group(nodes, max_layers)
    assert len(groups) == min(max_layers, len(nodes))
    flat = [p for g in groups for p in g]
    assert sorted(flat) == sorted(n.path for n in nodes)


def test_grouping_does_not_depend_on_input_order():
    nodes = random_closure(300, 2)
    shuffled = list(nodes)
    random.Random(3).shuffle(shuffled)
    assert group(nodes, 50) == group(shuffled, 50)


def test_large_paths_stay_alone_and_a_private_dependency_joins_its_user():
    nodes = [
        Node(path("app"), 1_000, (path("cuda"), path("helper"), path("libc"))),
        Node(path("helper"), 2_000, (path("libc"),)),  # used by app only
        Node(path("cuda"), 900_000_000, (path("libc"),)),
        Node(path("libc"), 30_000_000, ()),
    ]
    groups = group(nodes, 3)
    assert [path("cuda")] in groups and [path("libc")] in groups
    assert sorted([path("app"), path("helper")]) in groups


def test_re_push_cost_is_near_the_least_and_far_below_popularity():
    nodes = random_closure(600, 4)
    graph = Graph(nodes)
    least = graph.cost([[n.path] for n in nodes])
    ours = graph.cost(group(nodes, 100))
    popular = graph.cost(popularity_groups(nodes, 100))
    assert ours < 1.25 * least
    assert ours < popular / 3


def test_cost_counts_bytes_re_pushed_over_one_change_per_path():
    nodes = [Node(path("a"), 10, (path("b"),)), Node(path("b"), 100, ())]
    graph = Graph(nodes)
    # Alone: a is re-pushed when a or b changes (2 x 10), b only when b does (1 x 100).
    assert graph.cost([[path("a")], [path("b")]]) == 2 * 10 + 100
    assert graph.cost([[path("a"), path("b")]]) == 2 * 110

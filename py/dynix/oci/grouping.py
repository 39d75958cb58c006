"""Which store paths share a layer, so that a change re-pushes as few bytes as possible.

The model. In Nix, changing a package P gives new store paths to P and to everything that
depends on it, directly or not; every other path keeps its name, hence its layer blob. A layer
must be pushed again when any of its paths changed, and then all of its bytes go. So a layer G
is re-pushed after a change to P exactly when P is in the closure of one of G's paths. Write
T(G) for that set of P (the union of its paths' closures) and s(G) for its size; counting every
path of the closure as equally likely to be the one that changes, G costs s(G)·|T(G)| in total.

One layer per path is the least possible cost. When there are more paths than layers, groups are
merged greedily, always the pair whose merge adds the least:

    cost(A ∪ B) - cost(A) - cost(B) = s(A)·|T(B) \\ T(A)| + s(B)·|T(A) \\ T(B)|

This keeps large paths alone (their size multiplies every change they would share), merges a
path with the ones that always change together with it (a package and its only dependent cost
almost nothing together), and gathers the smallest leftovers into small layers. Candidate
pairs are the groups that reference one another plus the pairs among the few smallest groups,
so the work stays near-linear in the number of paths. Sizes are NAR sizes and ties are broken by
name: the same closure is grouped the same way everywhere.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MAX_LAYERS = 100
SMALLEST = 24  # how many of the smallest groups are paired with each other


@dataclass(frozen=True)
class Node:
    path: str
    size: int
    references: tuple[str, ...]


class Graph:
    """A closure: its paths in topological order (dependencies first) and their closures."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = sorted({n.path: n for n in nodes}.values(), key=lambda n: n.path)
        self.index = {n.path: i for i, n in enumerate(self.nodes)}
        self.refs = [
            sorted({self.index[r] for r in n.references if r in self.index and r != n.path})
            for n in self.nodes
        ]
        self.order = self._topological()
        self.rank = {i: pos for pos, i in enumerate(self.order)}
        self.closure = [0] * len(self.nodes)  # bitsets: the paths each path depends on, and itself
        for i in self.order:
            bits = 1 << i
            for r in self.refs[i]:
                bits |= self.closure[r]
            self.closure[i] = bits

    def _topological(self) -> list[int]:
        done: set[int] = set()
        order: list[int] = []
        for start in range(len(self.nodes)):
            if start in done:
                continue
            stack = [(start, iter(self.refs[start]))]
            done.add(start)
            while stack:
                node, children = stack[-1]
                for child in children:
                    if child not in done:
                        done.add(child)
                        stack.append((child, iter(self.refs[child])))
                        break
                else:
                    stack.pop()
                    order.append(node)
        return order

    def cost(self, groups: Sequence[Sequence[str]]) -> int:
        """Bytes re-pushed, summed over one change to each path of the closure in turn."""
        total = 0
        for group in groups:
            touched = 0
            for path in group:
                touched |= self.closure[self.index[path]]
            total += sum(self.nodes[self.index[p]].size for p in group) * touched.bit_count()
        return total


class _Group:
    __slots__ = ("members", "size", "touched", "neighbours", "name", "alive")

    def __init__(self, members: list[int], size: int, touched: int, name: str) -> None:
        self.members = members
        self.size = size
        self.touched = touched
        self.neighbours: set[int] = set()
        self.name = name
        self.alive = True


def _delta(a: _Group, b: _Group) -> int:
    return (
        a.size * (b.touched & ~a.touched).bit_count()
        + b.size * (a.touched & ~b.touched).bit_count()
    )


def group(nodes: Sequence[Node], max_layers: int = DEFAULT_MAX_LAYERS) -> list[list[str]]:
    """Split a closure into at most `max_layers` groups of store paths, in layer order.

    Layers come dependencies first; paths within a layer are sorted.
    """
    if max_layers < 1:
        raise ValueError("max_layers must be at least 1")
    graph = Graph(nodes)
    n = len(graph.nodes)
    groups = [
        _Group([i], graph.nodes[i].size, graph.closure[i], graph.nodes[i].path) for i in range(n)
    ]
    for i, refs in enumerate(graph.refs):
        for r in refs:
            groups[i].neighbours.add(r)
            groups[r].neighbours.add(i)
    live = n
    heap: list[tuple[int, int, str, str, int, int]] = []
    by_size: list[tuple[int, str, int]] = [(g.size, g.name, i) for i, g in enumerate(groups)]
    heapq.heapify(by_size)

    def push(a: int, b: int) -> None:
        ga, gb = groups[a], groups[b]
        if ga.name > gb.name:
            a, b, ga, gb = b, a, gb, ga
        heapq.heappush(heap, (_delta(ga, gb), ga.size + gb.size, ga.name, gb.name, a, b))

    def smallest() -> list[int]:
        found: list[tuple[int, str, int]] = []
        while by_size and len(found) < SMALLEST:
            entry = heapq.heappop(by_size)
            if groups[entry[2]].alive:
                found.append(entry)
        for entry in found:
            heapq.heappush(by_size, entry)
        return [entry[2] for entry in found]

    current_small: list[int] = []

    def pair_smallest() -> None:
        nonlocal current_small
        small = smallest()
        known = set(current_small)
        for x, a in enumerate(small):
            for b in small[x + 1 :]:
                if a not in known or b not in known:
                    push(a, b)
        current_small = small

    if live > max_layers:
        for i, g in enumerate(groups):
            for j in g.neighbours:
                if i < j:
                    push(i, j)
        pair_smallest()

    while live > max_layers and heap:
        _, _, _, _, a, b = heapq.heappop(heap)
        ga, gb = groups[a], groups[b]
        if not (ga.alive and gb.alive):
            continue
        merged = _Group(
            sorted(ga.members + gb.members),
            ga.size + gb.size,
            ga.touched | gb.touched,
            min(ga.name, gb.name),
        )
        ga.alive = gb.alive = False
        new = len(groups)
        groups.append(merged)
        merged.neighbours = {x for x in ga.neighbours | gb.neighbours if groups[x].alive}
        for x in merged.neighbours:
            groups[x].neighbours.discard(a)
            groups[x].neighbours.discard(b)
            groups[x].neighbours.add(new)
        heapq.heappush(by_size, (merged.size, merged.name, new))
        live -= 1
        for x in sorted(merged.neighbours):
            push(new, x)
        pair_smallest()

    result = [g for g in groups if g.alive]
    result.sort(key=lambda g: min(graph.rank[m] for m in g.members))
    return [[graph.nodes[m].path for m in g.members] for g in result]


def popularity_groups(nodes: Sequence[Node], max_layers: int) -> list[list[str]]:
    """For comparison: the most-depended-on paths alone, every other path in one last layer."""
    graph = Graph(nodes)
    n = len(graph.nodes)
    dependents = [0] * n
    for i in range(n):
        bits = graph.closure[i]
        for j in range(n):
            if bits >> j & 1:
                dependents[j] += 1
    ranked = sorted(range(n), key=lambda i: (-dependents[i], graph.nodes[i].path))
    alone = ranked[: max_layers - 1] if n > max_layers else ranked
    rest = ranked[len(alone) :]
    result = [[graph.nodes[i].path] for i in alone]
    if rest:
        result.append(sorted(graph.nodes[i].path for i in rest))
    return result

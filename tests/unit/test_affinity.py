"""Rendezvous hashing: stable, evenly spread, and minimally disturbed by a lost deployment."""

from __future__ import annotations

import hashlib
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from router_service.affinity import rendezvous_order

DEPLOYMENTS = ["sim-a/glm", "sim-b/glm", "sim-c/glm", "sim-d/glm"]


def first(prefix: str, items: list[str], unhealthy: frozenset[str] = frozenset()) -> str:
    return rendezvous_order(prefix, items, str, unhealthy)[0]


def prefixes(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


@given(st.text(min_size=1), st.permutations(DEPLOYMENTS))
def test_order_depends_on_the_prefix_not_on_the_listed_order(
    prefix: str, shuffled: list[str]
) -> None:
    assert rendezvous_order(prefix, shuffled, str) == rendezvous_order(prefix, DEPLOYMENTS, str)


def test_prefixes_spread_evenly() -> None:
    counts = Counter(first(p, DEPLOYMENTS) for p in prefixes(4000))
    assert set(counts) == set(DEPLOYMENTS)
    assert all(800 <= n <= 1200 for n in counts.values()), counts


def test_losing_a_deployment_moves_only_its_prefixes() -> None:
    keys = prefixes(2000)
    before = {p: first(p, DEPLOYMENTS) for p in keys}
    remaining = [d for d in DEPLOYMENTS if d != "sim-b/glm"]
    after = {p: first(p, remaining) for p in keys}
    moved = [p for p in keys if before[p] != after[p]]
    assert moved and all(before[p] == "sim-b/glm" for p in moved)
    # And each moved prefix goes to its own second choice, not to one overloaded neighbour.
    assert len(Counter(after[p] for p in moved)) == 3


def test_unhealthy_deployments_go_last_and_come_back_to_the_same_prefixes() -> None:
    keys = prefixes(500)
    healthy = {p: first(p, DEPLOYMENTS) for p in keys}
    down = frozenset({"sim-a/glm"})
    for p in keys:
        order = rendezvous_order(p, DEPLOYMENTS, str, down)
        assert order[-1] == "sim-a/glm"
    assert {p: first(p, DEPLOYMENTS) for p in keys} == healthy


def test_without_a_prefix_the_configured_order_stands() -> None:
    assert rendezvous_order("", DEPLOYMENTS[::-1], str) == DEPLOYMENTS[::-1]

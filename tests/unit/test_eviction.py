"""Inbound eviction, after Bitcoin Core's SelectNodeToEvict.

Most tests start from one crowd: 30 peers alone in their network groups, connected at
t = 0..29, and a group X of 4 newer peers (t = 100..103). With no pings or deliveries,
protections fall to the oldest peers, X stays the most represented group in what is
left, and X's youngest peer, x3, is evicted. Each test changes one thing about x3 (or
the crowd) and checks that the outcome changes with it; the first test is the control.
The netgroup step depends on the secret key, so the tests run under several keys.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchain.core.peers.eviction import (
    PROTECTED_BLOCK_RELAY_ONLY,
    PROTECTED_BY_BLOCK_TIME,
    PROTECTED_BY_NETGROUP,
    PROTECTED_BY_PING,
    PROTECTED_BY_TX_TIME,
    EvictionCandidate,
    eviction_pool,
    keyed_group,
    select_peer_to_evict,
)

KEYS = [b"key-one", b"key-two", bytes(range(32)), b"k" * 100]
GROUP_X = b"\x04\xc8"
# The fewest unprotected peers that guarantee a choice: every protection count, plus one.
ALWAYS_ENOUGH = (
    PROTECTED_BY_NETGROUP
    + PROTECTED_BY_PING
    + PROTECTED_BY_TX_TIME
    + PROTECTED_BLOCK_RELAY_ONLY
    + PROTECTED_BY_BLOCK_TIME
    + 1
)


def peer(name: str, group: bytes, connected_at: float, **fields: object) -> EvictionCandidate:
    return EvictionCandidate(name, group, connected_at, **fields)  # type: ignore[arg-type]


def crowd(**x3_fields: object) -> list[EvictionCandidate]:
    fillers = [peer(f"f{i}", bytes([4, i]), float(i)) for i in range(30)]
    xs = [peer(f"x{i}", GROUP_X, 100.0 + i) for i in range(3)]
    return [*fillers, *xs, peer("x3", GROUP_X, 103.0, **x3_fields)]


def replace(candidates: list[EvictionCandidate], name: str, **fields: object) -> None:
    index = next(i for i, c in enumerate(candidates) if c.peer == name)
    candidates[index] = dataclasses.replace(candidates[index], **fields)  # type: ignore[arg-type]


@pytest.fixture(params=KEYS, ids=lambda key: key[:8].hex())
def key(request: pytest.FixtureRequest) -> bytes:
    value: bytes = request.param
    return value


def test_control_the_largest_group_loses_its_youngest(key: bytes) -> None:
    # f29 would be the youngest peer of all were X not larger: group size comes first.
    candidates = crowd()
    replace(candidates, "f29", connected_at=500.0)
    assert select_peer_to_evict(candidates, key) == "x3"


def test_among_equal_groups_the_youngest_member_decides(key: bytes) -> None:
    fillers = [peer(f"f{i}", bytes([4, i]), float(i)) for i in range(30)]
    a = [peer("a0", b"A", 100.0), peer("a1", b"A", 102.0)]
    b = [peer("b0", b"B", 101.0), peer("b1", b"B", 103.0)]
    pool = eviction_pool([*fillers, *a, *b], key)
    assert sum(c.group == b"A" for c in pool) == sum(c.group == b"B" for c in pool) == 2
    assert select_peer_to_evict([*fillers, *a, *b], key) == "b1"
    later = [*fillers, a[0], peer("a1", b"A", 104.0), *b]
    assert select_peer_to_evict(later, key) == "a1"


def test_protected_peers_are_never_chosen(key: bytes) -> None:
    assert select_peer_to_evict(crowd(protected=True), key) == "x2"
    everyone = [dataclasses.replace(c, protected=True) for c in crowd()]
    assert select_peer_to_evict(everyone, key) is None


def test_the_best_ping_survives(key: bytes) -> None:
    assert select_peer_to_evict(crowd(min_ping=0.001), key) == "x2"
    # A measured but poor ping does not help when 8 peers are faster (12 here, as the
    # netgroup step may keep back up to 4 of them first).
    candidates = crowd(min_ping=0.5)
    for i in range(PROTECTED_BY_PING + PROTECTED_BY_NETGROUP):
        replace(candidates, f"f{i + 10}", min_ping=0.01)
    assert select_peer_to_evict(candidates, key) == "x3"


def test_a_recent_transaction_deliverer_survives(key: bytes) -> None:
    assert select_peer_to_evict(crowd(last_tx_time=900.0), key) == "x2"


def test_a_recent_block_deliverer_survives(key: bytes) -> None:
    assert select_peer_to_evict(crowd(last_block_time=900.0), key) == "x2"


def test_block_relay_only_peers_get_their_own_protection(key: bytes) -> None:
    # Relaying peers delivered blocks more recently than x3: they take the 4 block slots
    # (8 of them, as the netgroup step may keep back 4 first). As a block-relay-only
    # peer x3 is kept by the separate 8; as a relaying peer it is not.
    def with_newer_blocks(**x3_fields: object) -> list[EvictionCandidate]:
        candidates = crowd(last_block_time=50.0, **x3_fields)
        for i in range(PROTECTED_BY_BLOCK_TIME + PROTECTED_BY_NETGROUP):
            replace(candidates, f"f{i + 20}", last_block_time=60.0)
        return candidates

    assert select_peer_to_evict(with_newer_blocks(block_relay_only=True), key) == "x2"
    assert select_peer_to_evict(with_newer_blocks(relays_transactions=False), key) == "x2"
    assert select_peer_to_evict(with_newer_blocks(), key) == "x3"


def test_the_oldest_connections_survive(key: bytes) -> None:
    # 16 peers earn the ping, transaction and block slots; X and 16 plain peers remain.
    # The older half of those is kept: an old X is safe, a young X loses x3.
    def candidates(x_start: float) -> list[EvictionCandidate]:
        useful = [peer(f"p{i}", bytes([5, i]), 50.0, min_ping=0.01) for i in range(8)]
        useful += [peer(f"t{i}", bytes([6, i]), 50.0, last_tx_time=70.0) for i in range(4)]
        useful += [peer(f"b{i}", bytes([7, i]), 50.0, last_block_time=70.0) for i in range(4)]
        plain = [peer(f"f{i}", bytes([4, i]), 40.0 + i) for i in range(16)]
        xs = [peer(f"x{i}", GROUP_X, x_start + i) for i in range(4)]
        return [*useful, *plain, *xs]

    old_x = select_peer_to_evict(candidates(x_start=0.0), key)
    assert old_x is not None
    assert old_x.startswith("f")
    assert select_peer_to_evict(candidates(x_start=100.0), key) == "x3"


def test_discouraged_peers_go_first(key: bytes) -> None:
    candidates = crowd()
    for i in range(20, 30):
        replace(candidates, f"f{i}", discouraged=True)
    chosen = select_peer_to_evict(candidates, key)
    assert chosen in {f"f{i}" for i in range(20, 30)}
    # But a discouraged peer that is best by some measure is still kept (Bitcoin).
    assert select_peer_to_evict(crowd(discouraged=True, last_block_time=900.0), key) == "x2"
    assert select_peer_to_evict(crowd(discouraged=True), key) == "x3"


def test_nothing_to_evict() -> None:
    assert select_peer_to_evict([], b"key") is None
    few = [peer(f"f{i}", bytes([4, i]), float(i)) for i in range(10)]
    assert select_peer_to_evict(few, b"key") is None  # all covered by protections


def test_the_netgroup_step_follows_the_key() -> None:
    # Each of 40 peers alone in its group, all else equal: the netgroup step keeps back the
    # 4 groups ranked highest under the key, and different keys pick different groups.
    candidates = [peer(f"f{i}", bytes([4, i]), float(i)) for i in range(40)]
    kept: list[set[str]] = []
    for key in KEYS:
        ranked = sorted(candidates, key=lambda c: keyed_group(c.group, key), reverse=True)
        top = {c.peer for c in ranked[:PROTECTED_BY_NETGROUP]}
        pool = {c.peer for c in eviction_pool(candidates, key)}
        assert not top & pool
        kept.append(top)
    assert len({frozenset(k) for k in kept}) > 1


def test_the_choice_does_not_depend_on_candidate_order(key: bytes) -> None:
    candidates = crowd(min_ping=0.2)
    rng = random.Random(5)
    expected = select_peer_to_evict(candidates, key)
    for _ in range(10):
        rng.shuffle(candidates)
        assert select_peer_to_evict(candidates, key) == expected


# --- Properties ------------------------------------------------------------------------

candidate = st.builds(
    EvictionCandidate,
    peer=st.just(""),
    group=st.sampled_from([bytes([4, i]) for i in range(8)]),
    connected_at=st.floats(0, 1_000),
    min_ping=st.none() | st.floats(0.001, 2.0),
    last_tx_time=st.sampled_from([0.0, 10.0, 500.0, 900.0]),
    last_block_time=st.sampled_from([0.0, 10.0, 500.0, 900.0]),
    relays_transactions=st.booleans(),
    block_relay_only=st.booleans(),
    protected=st.booleans(),
    discouraged=st.booleans(),
)


@st.composite
def candidate_lists(draw: st.DrawFn) -> list[EvictionCandidate]:
    drawn = draw(st.lists(candidate, max_size=70))
    return [dataclasses.replace(c, peer=f"peer{i}") for i, c in enumerate(drawn)]


@settings(max_examples=150, deadline=None)
@given(candidate_lists(), st.binary(min_size=1, max_size=80))
def test_the_chosen_peer_is_an_unprotected_candidate(
    candidates: list[EvictionCandidate], key: bytes
) -> None:
    chosen = select_peer_to_evict(candidates, key)
    unprotected = [c for c in candidates if not c.protected]
    if chosen is None:
        assert len(unprotected) < ALWAYS_ENOUGH
        return
    [record] = [c for c in candidates if c.peer == chosen]
    assert not record.protected
    pool = eviction_pool(candidates, key)
    if any(c.discouraged for c in pool):
        assert record.discouraged
    same_group = [c for c in pool if c.group == record.group]
    assert record.connected_at == max(c.connected_at for c in same_group)
    assert select_peer_to_evict(list(reversed(candidates)), key) == chosen

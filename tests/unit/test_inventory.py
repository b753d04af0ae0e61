"""The bounded sets relay keeps: they forget their oldest members, and only those."""

from __future__ import annotations

import pytest

from meshchain.core.relay.inventory import FifoSet, RecentlyConfirmed, RollingSet


def h(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_a_rolling_set_keeps_exactly_its_capacity_of_the_newest() -> None:
    members = RollingSet(100)
    for n in range(1_000):
        members.add(h(n))
        assert len(members) == min(n + 1, 100)
        assert all(h(m) in members for m in range(max(0, n - 99), n + 1))
    assert h(899) not in members
    members.update(h(n) for n in range(2_000, 2_030))
    assert h(2_029) in members
    members.discard(h(2_029))
    assert h(2_029) not in members
    members.clear()
    assert len(members) == 0
    with pytest.raises(ValueError, match="capacity"):
        RollingSet(0)


def test_a_rolling_set_pruned_early_keeps_its_queue_short() -> None:
    members = RollingSet(50_000)
    for n in range(10_000):
        members.add(h(n))
        members.discard(h(n))  # confirmed at once: relay prunes known inventory so
    assert len(members) == 0
    assert len(members._order) <= 64 + 1


def test_a_fifo_set_forgets_in_insertion_order_and_walks_in_it() -> None:
    members = FifoSet(3)
    members.update([h(1), h(2), h(3)])
    members.add(h(2))  # already in: stays where it was
    members.add(h(4))
    assert list(members) == [h(2), h(3), h(4)]


def test_recently_confirmed_remembers_a_depth_of_blocks_and_forgets_reorged_ones() -> None:
    confirmed = RecentlyConfirmed(depth=2)
    confirmed.block_connected(1, [h(1)])
    confirmed.block_connected(2, [h(2)])
    assert h(1) in confirmed
    confirmed.block_connected(3, [h(3)])
    assert h(1) not in confirmed
    confirmed.block_disconnected(3)
    assert h(3) not in confirmed
    assert h(2) in confirmed

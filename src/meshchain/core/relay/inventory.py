"""Bounded sets of hashes: what a peer knows, what we saw lately, what was confirmed.

Bitcoin keeps these in rolling Bloom filters (fixed memory, rare false positives). We
keep exact sets that forget their oldest entries, which is as cheap in Python and never
mistakes a new transaction for a known one: `RollingSet` (a plain set with an eviction
queue, the lean one, for what is only asked "is it in?") and `FifoSet` (an ordered dict,
for the few sets that are also walked in order).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

# Stale queue entries a RollingSet tolerates beyond twice its size before compacting.
COMPACT_SLACK = 64


class RollingSet(set[bytes]):
    """A set that forgets its oldest members once it holds more than `capacity`.

    A plain set (membership, the hot path, is the set's own C code) plus a queue of
    members in insertion order for eviction; members discarded early leave stale entries
    in the queue, which is compacted once stale entries outnumber live ones. Lean where
    it matters: a thousand simulated nodes hold sixteen of these each, and an entry costs
    a third of an ordered dict's. Never iterated by relay, so the hash order of its
    members cannot leak into what a node does.
    """

    __slots__ = ("_order", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        super().__init__()
        self.capacity = capacity
        self._order: deque[bytes] = deque()

    def add(self, item: bytes) -> None:
        if item in self:
            return
        super().add(item)
        self._order.append(item)
        self._trim()

    def update(self, *batches: Iterable[bytes]) -> None:
        for items in batches:
            fresh = [item for item in items if item not in self]
            super().update(fresh)
            self._order.extend(fresh)
        self._trim()

    def clear(self) -> None:
        super().clear()
        self._order.clear()

    def _trim(self) -> None:
        order = self._order
        while len(self) > self.capacity:
            self.discard(order.popleft())
        if len(order) > 2 * len(self) + COMPACT_SLACK:
            self._order = deque(item for item in order if item in self)


class FifoSet(OrderedDict[bytes, None]):
    """A set that forgets its oldest member once it holds `capacity` of them.

    An OrderedDict underneath (members are its keys): `in` and `len` run in C, and
    forgetting the oldest is O(1). A plain dict's `next(iter(d))` after deleting from
    the front scans every deleted slot up to the next resize, which made a full set
    (a peer past 50,000 known transactions) cost thousands of steps per add.
    """

    __slots__ = ("capacity",)

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        super().__init__()
        self.capacity = capacity

    def add(self, item: bytes) -> None:
        if item in self:
            return
        self[item] = None
        if len(self) > self.capacity:
            self.popitem(last=False)

    def update(self, items: Iterable[bytes]) -> None:  # type: ignore[override]
        """Add each of `items` in order, as `add` would (in C: relay calls this with
        every transaction announced to a peer)."""
        super().update(dict.fromkeys(items))  # members stay where they were, as in add
        while len(self) > self.capacity:
            self.popitem(last=False)

    def discard(self, item: bytes) -> None:
        self.pop(item, None)


class RecentlyConfirmed:
    """Transaction ids confirmed in the last `depth` blocks of the active chain.

    An announcement of a transaction that a block just confirmed is common (the
    announcer had not seen the block yet); without this we would fetch it only to find
    its nonce stale. Bitcoin's m_recent_confirmed_transactions does the same job.
    Remembering by depth rather than by count keeps a node's memory proportional to
    block size, which matters with a thousand nodes in one simulator.
    """

    __slots__ = ("_by_height", "_heights", "depth", "has")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._by_height: dict[bytes, int] = {}
        self._heights: dict[int, list[bytes]] = {}
        # `in` for relay's hot loops: the dict's own method, no Python call.
        self.has: Callable[[object], bool] = self._by_height.__contains__

    def __contains__(self, txid: object) -> bool:
        return txid in self._by_height

    def __len__(self) -> int:
        return len(self._by_height)

    def block_connected(self, height: int, txids: list[bytes]) -> None:
        self._heights[height] = txids
        for txid in txids:
            self._by_height[txid] = height
        for old in [h for h in self._heights if h <= height - self.depth]:
            for txid in self._heights.pop(old):
                if self._by_height.get(txid) == old:
                    del self._by_height[txid]

    def block_disconnected(self, height: int) -> None:
        """A reorg returned the block's transactions to the mempool: forget them."""
        for txid in self._heights.pop(height, []):
            if self._by_height.get(txid) == height:
                del self._by_height[txid]

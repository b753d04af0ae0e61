"""Bounded sets of hashes: what a peer knows, what we saw lately, what was confirmed.

Bitcoin keeps these in rolling Bloom filters (fixed memory, rare false positives). We
keep exact sets that forget their oldest entries, which is as cheap in Python and never
mistakes a new transaction for a known one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class BoundedSet:
    """A set that forgets its oldest member once it holds `capacity` of them."""

    __slots__ = ("_items", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._items: dict[bytes, None] = {}

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._items)

    def add(self, item: bytes) -> None:
        items = self._items
        if item in items:
            return
        items[item] = None
        if len(items) > self.capacity:
            del items[next(iter(items))]

    def update(self, items: Iterable[bytes]) -> None:
        for item in items:
            self.add(item)

    def discard(self, item: bytes) -> None:
        self._items.pop(item, None)

    def clear(self) -> None:
        self._items.clear()


class RecentlyConfirmed:
    """Transaction ids confirmed in the last `depth` blocks of the active chain.

    An announcement of a transaction that a block just confirmed is common (the
    announcer had not seen the block yet); without this we would fetch it only to find
    its nonce stale. Bitcoin's m_recent_confirmed_transactions does the same job.
    Remembering by depth rather than by count keeps a node's memory proportional to
    block size, which matters with a thousand nodes in one simulator.
    """

    __slots__ = ("_by_height", "_heights", "depth")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._by_height: dict[bytes, int] = {}
        self._heights: dict[int, list[bytes]] = {}

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

"""Validated headers ahead of our blocks: a bounded tree on top of the chain's block index.

Headers-first sync checks every header as it arrives (it links to its parent, the
engine's seal, the height, the timestamp rules) before it asks for any block body, and
keeps here the headers whose blocks it does not have yet. The parent of the oldest ones
is a block the chain has stored; a header leaves the tree as soon as its block is stored
there. The tree never holds more than its capacity (`MAX_HEADERS_IN_MEMORY`): what
would not fit is refused, and sync prunes branches it is not downloading.

The tree also keeps its most-work header (`best`, ties to the first seen, as the chain's
fork choice) and the path to it by height (`path`): the blocks sync downloads, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from meshchain.core.chain.block import BlockHeader, header_hash
from meshchain.core.chain.chainstate import MEDIAN_TIME_SPAN, ChainState, check_header_rules
from meshchain.core.chain.validation import check_header_fields
from meshchain.core.sync.locator import locator_heights
from meshchain.core.wire.codec import encode
from meshchain.errors import RejectCode, ValidationError

# Ours: sixteen full Headers messages. A header with a PoA or PoW seal takes about 0.8 KB
# of memory here, so the tree stays under ~26 MB however many peers feed it.
MAX_HEADERS_IN_MEMORY = 32_000


@dataclass(slots=True)
class HeaderEntry:
    header: BlockHeader
    hash: bytes
    chain_weight: int  # cumulative, as the engine weighs blocks (fork choice)
    sequence: int  # arrival order: among equal weights the earlier header wins
    source: str  # the peer that sent it first


@dataclass(slots=True)
class AddResult:
    """What adding one Headers message did."""

    added: int = 0  # new headers stored
    size: int = 0  # encoded bytes of the headers looked at
    last: bytes | None = None  # the last header found valid (new or already known)
    error: ValidationError | None = None  # the first header that broke a rule
    unconnecting: bool = False  # the first header's parent is unknown to us
    full: bool = False  # the tree reached its capacity before the end
    new: list[bytes] = field(default_factory=list)


class HeaderTree:
    def __init__(self, chain: ChainState, capacity: int = MAX_HEADERS_IN_MEMORY) -> None:
        self.chain = chain
        self.capacity = capacity
        self._entries: dict[bytes, HeaderEntry] = {}
        self._children: dict[bytes, list[bytes]] = {}
        self._sequence = 0
        self.rebuilds = 0  # counts path rebuilds: a downloader's plan is stale after one
        self.best: HeaderEntry | None = None
        # The path from the chain's stored blocks to `best`, by height.
        self.path: dict[int, bytes] = {}
        self.path_low = 0  # lowest height in `path` (path empty: path_low > path_high)
        self.path_high = -1

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self._entries

    def get(self, block_hash: bytes) -> HeaderEntry | None:
        return self._entries.get(block_hash)

    # --- what we know of any header, in the tree or in the chain -----------------------

    def known(self, block_hash: bytes) -> tuple[BlockHeader, int] | None:
        """(header, chain weight) of a header here or a block the chain stored."""
        entry = self._entries.get(block_hash)
        if entry is not None:
            return entry.header, entry.chain_weight
        stored = self.chain.entry(block_hash)
        header = self.chain.header(block_hash)
        if stored is None or header is None:
            return None
        return header, stored.chain_weight

    def parent_of(self, block_hash: bytes) -> bytes | None:
        entry = self._entries.get(block_hash)
        if entry is not None:
            return entry.header.parent
        stored = self.chain.entry(block_hash)
        return None if stored is None or stored.height == 0 else stored.parent

    def locator(self, tip: bytes) -> list[bytes]:
        """A block locator for the branch that ends at `tip` (a header here or a stored
        block), walked down once: path and best-chain heights are looked up directly."""
        known = self.known(tip)
        if known is None:
            return []
        chain, path = self.chain, self.path
        current, height = tip, known[0].height
        locator: list[bytes] = []
        for wanted in locator_heights(height):
            while height > wanted:
                if height > self.path_low and path.get(height) == current:
                    step = max(wanted, self.path_low)
                    current, height = path[step], step
                    continue
                if chain.hash_at(height) == current:
                    main = chain.hash_at(wanted)
                    assert main is not None
                    current, height = main, wanted
                    continue
                parent = self.parent_of(current)
                assert parent is not None  # every tree header links down to a stored block
                current, height = parent, height - 1
            locator.append(current)
        return locator

    def _time_window(self, block_hash: bytes) -> deque[int]:
        """Timestamps of a block and its ancestors, up to MEDIAN_TIME_SPAN, oldest first."""
        times: list[int] = []
        current: bytes | None = block_hash
        while current is not None and len(times) < MEDIAN_TIME_SPAN:
            entry = self._entries.get(current)
            if entry is not None:
                times.append(entry.header.timestamp_ms)
                current = entry.header.parent
                continue
            stored = self.chain.entry(current)
            if stored is None:
                break
            times.append(stored.timestamp_ms)
            current = stored.parent if stored.height > 0 else None
        return deque(reversed(times), maxlen=MEDIAN_TIME_SPAN)

    # --- adding -------------------------------------------------------------------------

    def add(self, headers: list[BlockHeader], now: float, source: str) -> AddResult:
        """Check and store a Headers message's headers, parent first; stops at the first
        one that breaks a rule (`error`) or at the capacity (`full`)."""
        result = AddResult()
        if not headers:
            return result
        parent_hash = headers[0].parent
        parent = self.known(parent_hash)
        if parent is None:
            result.unconnecting = True
            return result
        stored = self.chain.entry(parent_hash)
        if stored is not None and stored.invalid:
            result.error = ValidationError(RejectCode.INVALID_ANCESTOR, "parent is invalid")
            return result
        parent_header, parent_weight = parent
        window = self._time_window(parent_hash)
        chain, engine = self.chain, self.chain.engine
        for header in headers:
            raw = encode(header)
            result.size += len(raw)
            if header.parent != parent_hash:
                result.error = ValidationError(RejectCode.MALFORMED, "headers do not link")
                return result
            this_hash = header_hash(header)
            known = self.known(this_hash)
            if known is not None:
                stored = chain.entry(this_hash)
                if stored is not None and stored.invalid:
                    result.error = ValidationError(
                        RejectCode.INVALID_ANCESTOR, "header of a known invalid block"
                    )
                    return result
                parent_header, parent_weight = known
            else:
                if len(self._entries) >= self.capacity:
                    result.full = True
                    return result
                try:
                    check_header_fields(header, chain.chain_id)
                    median = sorted(window)[len(window) // 2]
                    check_header_rules(engine, header, parent_header, median, now)
                except ValidationError as error:
                    result.error = error
                    return result
                parent_weight += engine.block_weight(header)
                self._store(HeaderEntry(header, this_hash, parent_weight, self._sequence, source))
                self._sequence += 1
                result.added += 1
                result.new.append(this_hash)
                parent_header = header
            window.append(header.timestamp_ms)
            parent_hash = this_hash
            result.last = this_hash
        return result

    def _store(self, entry: HeaderEntry) -> None:
        self._entries[entry.hash] = entry
        self._children.setdefault(entry.header.parent, []).append(entry.hash)
        best = self.best
        if best is None or entry.chain_weight > best.chain_weight:
            self.best = entry
            if best is not None and entry.header.parent == best.hash:
                self.path[entry.header.height] = entry.hash
                self.path_high = entry.header.height
            else:
                self._rebuild_path()

    # --- removing -----------------------------------------------------------------------

    def stored(self, block_hash: bytes) -> None:
        """The chain has stored this block: its header leaves the tree."""
        entry = self._entries.pop(block_hash, None)
        if entry is None:
            return
        self._unlink(entry)
        height = entry.header.height
        if self.path.get(height) == block_hash:
            del self.path[height]
            if height == self.path_low:
                self.path_low += 1
            else:
                self._rebuild_path()
        if self.best is entry:
            self._choose_best()

    def drop_subtree(self, block_hash: bytes) -> int:
        """Forget a header (if here) and every descendant: the block proved invalid."""
        dropped = self._drop(block_hash)
        self._after_drop()
        return dropped

    def prune(self, keep: Callable[[HeaderEntry], bool]) -> int:
        """Forget every header for which `keep` is false, with its descendants (they
        would no longer link to anything we know); how many went."""
        doomed = [entry.hash for entry in self._entries.values() if not keep(entry)]
        dropped = sum(self._drop(block_hash) for block_hash in doomed)
        self._after_drop()
        return dropped

    def _drop(self, block_hash: bytes) -> int:
        dropped = 0
        pending = [block_hash]
        while pending:
            current = pending.pop()
            pending.extend(self._children.pop(current, []))
            entry = self._entries.pop(current, None)
            if entry is not None:
                self._unlink(entry)
                dropped += 1
        return dropped

    def _after_drop(self) -> None:
        if self.best is not None and self.best.hash not in self._entries:
            self._choose_best()
        else:
            self._rebuild_path()

    def _unlink(self, entry: HeaderEntry) -> None:
        siblings = self._children.get(entry.header.parent)
        if siblings is not None:
            siblings.remove(entry.hash)
            if not siblings:
                del self._children[entry.header.parent]

    def _choose_best(self) -> None:
        self.best = max(
            self._entries.values(),
            key=lambda e: (e.chain_weight, -e.sequence),
            default=None,
        )
        self._rebuild_path()

    def _rebuild_path(self) -> None:
        """The path from the chain's stored blocks to `best`, walked back through the tree."""
        self.rebuilds += 1
        self.path = {}
        best = self.best
        if best is None:
            self.path_low, self.path_high = 0, -1
            return
        self.path_high = best.header.height
        entry: HeaderEntry | None = best
        low = self.path_high + 1
        while entry is not None:
            low = entry.header.height
            self.path[low] = entry.hash
            entry = self._entries.get(entry.header.parent)
        self.path_low = low

"""Which block body is asked of which peer, and who is holding the download up.

Bitcoin Core's rules (net_processing.cpp, FindNextBlocksToDownload and SendMessages):

- Blocks are fetched only inside a window of BLOCK_DOWNLOAD_WINDOW (1,024) heights from
  the first block we still lack, at most MAX_BLOCKS_IN_TRANSIT_PER_PEER (16) per peer,
  each peer only up to the height it has shown us it can serve.
- A peer with free slots that finds nothing left to fetch in the window, although it
  could serve blocks past its end, is waiting on whoever holds the window's first block:
  that peer is *stalling* the download. If it has not delivered within the stall
  timeout (2 s at first) it is dropped, its blocks go to others, and the timeout doubles
  (up to 64 s), so a slow link is not mistaken for a stalling one twice; every block
  connected shrinks it again by 15%.
- A peer that delivers nothing for a long while (BLOCK_DOWNLOAD_TIMEOUT_BASE, longer
  with more peers sharing our link) is dropped too, so one silent peer cannot hold its
  16 blocks for ever when nobody else notices.

Blocks that arrive before their parent wait in a `ReorderBuffer` bounded in bytes.
Pure: time arrives as `now`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from meshchain.core.chain.block import Block
from meshchain.core.events import PeerId
from meshchain.core.wire.messages import MAX_BLOCKS_PER_REQUEST

# Bitcoin's BLOCK_DOWNLOAD_WINDOW: how far past the first missing block we fetch.
BLOCK_DOWNLOAD_WINDOW = 1_024
# Bitcoin's MAX_BLOCKS_IN_TRANSIT_PER_PEER.
MAX_BLOCKS_IN_TRANSIT_PER_PEER = MAX_BLOCKS_PER_REQUEST
# Ours: a peer still busy with blocks is asked for more once a quarter of its slots are
# free, not at every block: a GetBlocks per 4 blocks instead of per block, with 12 to 16
# always in flight.
MIN_REQUEST_BATCH = MAX_BLOCKS_IN_TRANSIT_PER_PEER // 4
# Bitcoin's BLOCK_STALLING_TIMEOUT_DEFAULT and BLOCK_STALLING_TIMEOUT_MAX (seconds).
BLOCK_STALLING_TIMEOUT_DEFAULT = 2.0
BLOCK_STALLING_TIMEOUT_MAX = 64.0
# Bitcoin (PeerManagerImpl::BlockConnected): each connected block shrinks a raised
# stall timeout to 85% of itself, never below the default.
STALLING_TIMEOUT_DECAY = 0.85
# Bitcoin's BLOCK_DOWNLOAD_TIMEOUT_BASE and _PER_PEER are 1 and 0.5 block intervals
# (10 and 5 minutes). Our intervals are seconds, so we keep the ratio on a fixed base:
# two minutes without a single block from a peer, above the stall timeout's cap (a peer
# holding up the window is judged by that rule first) and time for 16 full 4 MB blocks
# at ~4 Mbit/s.
BLOCK_DOWNLOAD_TIMEOUT_BASE = 120.0
BLOCK_DOWNLOAD_TIMEOUT_PER_PEER = 60.0
# Ours: bytes of out-of-order blocks held before we fetch only what drains the buffer.
# Bitcoin writes them to disk; 64 MiB is sixteen full blocks or a thousand typical ones.
MAX_REORDER_BUFFER_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class _PeerDownload:
    blocks: dict[bytes, int] = field(default_factory=dict)  # hash -> height, oldest first
    downloading_since: float = 0.0  # last delivery, or the first request after none
    stalling_since: float | None = None


class BlockDownload:
    def __init__(self) -> None:
        self.stall_timeout = BLOCK_STALLING_TIMEOUT_DEFAULT
        self._in_flight: dict[bytes, PeerId] = {}
        self._peers: dict[PeerId, _PeerDownload] = {}
        self._retry: list[int] = []  # heights handed back (timeouts, not found, bad bodies)
        self._watermark = -1  # every height up to here was handed out once

    def in_flight(self, block_hash: bytes) -> bool:
        return block_hash in self._in_flight

    def holder(self, block_hash: bytes) -> PeerId | None:
        return self._in_flight.get(block_hash)

    def count(self, peer: PeerId) -> int:
        state = self._peers.get(peer)
        return 0 if state is None else len(state.blocks)

    @property
    def total_in_flight(self) -> int:
        return len(self._in_flight)

    def restart(self, first_missing: int) -> None:
        """The path changed under us: hand out again from its first missing block."""
        self._watermark = first_missing - 1
        self._retry.clear()

    def assign(
        self,
        peer: PeerId,
        now: float,
        low: int,
        end: int,
        hash_at: Callable[[int], bytes | None],
        have: Callable[[bytes], bool],
    ) -> list[bytes]:
        """Blocks at heights `low..end` for `peer` to send, up to its free slots."""
        state = self._peers.setdefault(peer, _PeerDownload())
        free = MAX_BLOCKS_IN_TRANSIT_PER_PEER - len(state.blocks)
        picked: list[tuple[int, bytes]] = []
        retry = self._retry
        while retry and len(picked) < free and retry[0] <= end:
            height = heapq.heappop(retry)
            block_hash = hash_at(height) if height >= low else None
            if block_hash is not None and not have(block_hash):
                picked.append((height, block_hash))
        self._watermark = max(self._watermark, low - 1)
        while len(picked) < free and self._watermark < end:
            self._watermark += 1
            block_hash = hash_at(self._watermark)
            if block_hash is not None and not have(block_hash):
                picked.append((self._watermark, block_hash))
        if picked and not state.blocks:
            state.downloading_since = now
        for height, block_hash in picked:
            state.blocks[block_hash] = height
            self._in_flight[block_hash] = peer
        return [block_hash for _, block_hash in picked]

    def free_slots(self, peer: PeerId) -> int:
        return MAX_BLOCKS_IN_TRANSIT_PER_PEER - self.count(peer)

    def wants_more(self, peer: PeerId) -> bool:
        """Whether to ask the peer for blocks now: it has nothing in flight, or at least
        MIN_REQUEST_BATCH free slots."""
        busy = self.count(peer)
        return busy == 0 or MAX_BLOCKS_IN_TRANSIT_PER_PEER - busy >= MIN_REQUEST_BATCH

    def note_stall(self, block_hash: bytes, waiting: PeerId, now: float) -> None:
        """`waiting` could fetch more if the window moved: whoever holds its first block
        is stalling it, from now (if not already)."""
        holder = self._in_flight.get(block_hash)
        if holder is None or holder == waiting:
            return
        state = self._peers[holder]
        if state.stalling_since is None:
            state.stalling_since = now

    def received(self, peer: PeerId, block_hash: bytes, now: float) -> bool:
        """A block arrived from `peer`: no longer in flight (whoever was asked). Whether
        it had been asked for at all."""
        holder = self._in_flight.pop(block_hash, None)
        if holder is None:
            return False
        state = self._peers[holder]
        state.blocks.pop(block_hash, None)
        if holder == peer:
            state.stalling_since = None
            state.downloading_since = max(state.downloading_since, now)
        return True

    def give_back(self, heights: list[int]) -> None:
        """Heights to hand out again (a bad body, a block not found, a dropped peer)."""
        for height in heights:
            heapq.heappush(self._retry, height)

    def forget(self, block_hash: bytes) -> None:
        """Stop waiting for a block we no longer want (its branch turned out invalid)."""
        holder = self._in_flight.pop(block_hash, None)
        if holder is not None:
            self._peers[holder].blocks.pop(block_hash, None)

    def forget_all(self, unwanted: Callable[[bytes], bool]) -> None:
        """Stop waiting for every block in flight that `unwanted` names."""
        for block_hash in [h for h in self._in_flight if unwanted(h)]:
            self.forget(block_hash)

    def not_found(self, peer: PeerId, hashes: list[bytes]) -> list[int]:
        """The peer does not have these: their heights, handed back."""
        state = self._peers.get(peer)
        if state is None:
            return []
        heights = []
        for block_hash in hashes:
            height = state.blocks.pop(block_hash, None)
            if height is not None:
                del self._in_flight[block_hash]
                heights.append(height)
        self.give_back(heights)
        return heights

    def release(self, peer: PeerId) -> list[int]:
        """The peer is gone or dropped: its blocks are handed back."""
        state = self._peers.pop(peer, None)
        if state is None:
            return []
        for block_hash in state.blocks:
            del self._in_flight[block_hash]
        heights = list(state.blocks.values())
        self.give_back(heights)
        return heights

    def overdue(self, now: float) -> list[tuple[PeerId, str]]:
        """Peers to drop: stalling the window past the stall timeout, or silent for the
        block download timeout. Each stall found doubles the stall timeout."""
        downloading = sum(1 for state in self._peers.values() if state.blocks)
        patience = BLOCK_DOWNLOAD_TIMEOUT_BASE + BLOCK_DOWNLOAD_TIMEOUT_PER_PEER * max(
            0, downloading - 1
        )
        found: list[tuple[PeerId, str]] = []
        stalled = False
        for peer, state in self._peers.items():
            since = state.stalling_since
            if since is not None and now - since > self.stall_timeout:
                found.append((peer, f"stalled the block download for {now - since:.1f} s"))
                stalled = True
            elif state.blocks and now - state.downloading_since > patience:
                found.append((peer, f"sent no block in {now - state.downloading_since:.0f} s"))
        if stalled:
            self.stall_timeout = min(BLOCK_STALLING_TIMEOUT_MAX, 2 * self.stall_timeout)
        return found

    def block_connected(self) -> None:
        """Sync progressed: a raised stall timeout eases back toward the default."""
        if self.stall_timeout > BLOCK_STALLING_TIMEOUT_DEFAULT:
            self.stall_timeout = max(
                BLOCK_STALLING_TIMEOUT_DEFAULT, self.stall_timeout * STALLING_TIMEOUT_DECAY
            )


@dataclass(slots=True)
class _Held:
    block: Block
    raw: bytes
    peer: PeerId


class ReorderBuffer:
    """Blocks that arrived before their parent, by hash, bounded by what sync asks for
    (the window) and watched in bytes (`over_budget`)."""

    def __init__(self, max_bytes: int = MAX_REORDER_BUFFER_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._held: dict[bytes, _Held] = {}
        self._heights: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self._held

    def put(self, block_hash: bytes, block: Block, raw: bytes, peer: PeerId) -> None:
        if block_hash not in self._held:
            self._held[block_hash] = _Held(block, raw, peer)
            self._heights[block_hash] = block.header.height
            self.bytes += len(raw)

    def pop(self, block_hash: bytes) -> tuple[Block, bytes, PeerId] | None:
        held = self._held.pop(block_hash, None)
        if held is None:
            return None
        del self._heights[block_hash]
        self.bytes -= len(held.raw)
        return held.block, held.raw, held.peer

    def over_budget(self) -> bool:
        return self.bytes >= self.max_bytes

    def lowest_height(self) -> int | None:
        return min(self._heights.values(), default=None)

    def discard(self, keep: Callable[[bytes], bool]) -> None:
        """Drop held blocks sync no longer wants."""
        for block_hash in [h for h in self._held if not keep(h)]:
            self.pop(block_hash)

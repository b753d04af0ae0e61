"""Block relay: announce at once, fetch as a compact block, push to high-bandwidth peers.

A block this node has fully validated and connected is announced to every peer that
does not know it: pushed as a `CompactBlock` to peers that asked for that (BIP152's
high-bandwidth mode, at most 3 of them, chosen by each receiver as the peers that most
recently gave it a new block first), and as an `Inventory` to the rest, who fetch it
with `GetData(COMPACT_BLOCK)`. A compact block is rebuilt from the mempool; what is
missing comes with `GetBlockTxn`/`BlockTxn`; a collision, a mismatch or an unknown
parent falls back to the whole block. Requests time out and move to another announcer.
Pure: time arrives as `now`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from meshchain.core.chain.block import Block
from meshchain.core.chain.tx import Transaction
from meshchain.core.events import Action, PeerId, ScheduleTimer, Send
from meshchain.core.relay.compact import (
    CompactBlockError,
    PartialBlock,
    block_transactions,
    compact_block,
)
from meshchain.core.relay.inventory import RollingSet
from meshchain.core.wire.codec import MAX_UINT
from meshchain.core.wire.messages import (
    BlockMessage,
    BlockTxn,
    CompactBlock,
    GetBlockTxn,
    GetData,
    Inventory,
    InvKind,
    NotFound,
    SendCompact,
)

# BIP152: a node asks at most 3 peers to push it compact blocks unasked.
MAX_HIGH_BANDWIDTH_PEERS = 3
# Ours: block hashes remembered per peer as known to it (Bitcoin tracks the best one).
MAX_KNOWN_BLOCKS_PER_PEER = 1_024
# Ours: blocks requested at once, and compact blocks waiting for their missing part.
MAX_BLOCKS_IN_FLIGHT = 64
MAX_PENDING_COMPACT = 16
# Ours: seconds a block request may take before another announcer is asked (Bitcoin
# waits minutes for whole blocks during sync; a relayed block is small and urgent).
BLOCK_FETCH_TIMEOUT = 10.0
# Ours: announcers remembered per requested block, as fallbacks.
MAX_ANNOUNCERS_PER_BLOCK = 8

BLOCK_REQUEST_TIMER = "relay/block-requests"

BlockLookup = Callable[[bytes], Block | None]


@dataclass(slots=True)
class _BlockPeer:
    known: RollingSet
    push_compact: bool = False  # it asked for high-bandwidth mode


@dataclass(slots=True)
class _Request:
    peer: PeerId
    expires: float
    announcers: list[PeerId] = field(default_factory=list)
    partial: PartialBlock | None = None


class BlockRelay:
    def __init__(self, compact: bool, rng: random.Random) -> None:
        self.compact = compact
        self.rng = rng
        self._peers: dict[PeerId, _BlockPeer] = {}
        self._high_bandwidth: list[PeerId] = []  # ours, most recent first
        self._requests: dict[bytes, _Request] = {}
        self._timer_pending = False

    # --- peers ----------------------------------------------------------------------

    def peer_connected(self, peer: PeerId) -> None:
        self._peers[peer] = _BlockPeer(RollingSet(MAX_KNOWN_BLOCKS_PER_PEER))

    def peer_disconnected(self, peer: PeerId, now: float) -> list[Action]:
        self._peers.pop(peer, None)
        if peer in self._high_bandwidth:
            self._high_bandwidth.remove(peer)
        actions: list[Action] = []
        for block_hash, request in list(self._requests.items()):
            if peer in request.announcers:
                request.announcers.remove(peer)
            if request.peer == peer:
                actions += self._retry(block_hash, request, now)
        return actions

    def high_bandwidth_peers(self) -> list[PeerId]:
        return list(self._high_bandwidth)

    def pushes_to(self, peer: PeerId) -> bool:
        state = self._peers.get(peer)
        return state is not None and state.push_compact

    def on_send_compact(self, peer: PeerId, high_bandwidth: bool) -> list[Action]:
        state = self._peers.get(peer)
        if state is not None:
            state.push_compact = high_bandwidth and self.compact
        return []

    def delivered_first(self, peer: PeerId) -> list[Action]:
        """`peer` gave us a block that became our tip: make it high-bandwidth (BIP152)."""
        if not self.compact or peer not in self._peers:
            return []
        chosen = self._high_bandwidth
        if chosen and chosen[0] == peer:
            return []
        actions: list[Action] = []
        if peer in chosen:
            chosen.remove(peer)
        else:
            actions.append(Send(peer, SendCompact(True)))
        chosen.insert(0, peer)
        while len(chosen) > MAX_HIGH_BANDWIDTH_PEERS:
            actions.append(Send(chosen.pop(), SendCompact(False)))
        return actions

    # --- announcing -----------------------------------------------------------------

    def announce(self, block: Block, block_hash: bytes, source: PeerId | None) -> list[Action]:
        """Tell every peer but the source that lacks it about a block we connected."""
        actions: list[Action] = []
        inventory: Inventory | None = None
        for peer, state in self._peers.items():
            if peer == source or block_hash in state.known:
                continue
            state.known.add(block_hash)
            if state.push_compact:
                nonce = self.rng.randrange(MAX_UINT)
                actions.append(Send(peer, compact_block(block, nonce)))
            else:
                if inventory is None:
                    inventory = Inventory(InvKind.BLOCK, [block_hash])
                actions.append(Send(peer, inventory))
        return actions

    def greet(self, peer: PeerId, tip_hash: bytes) -> list[Action]:
        """Tell a new peer our tip; it asks for the block if it lacks it."""
        state = self._peers.get(peer)
        if state is not None:
            state.known.add(tip_hash)
        return [Send(peer, Inventory(InvKind.BLOCK, [tip_hash]))]

    # --- fetching -------------------------------------------------------------------

    def on_inventory(
        self, peer: PeerId, hashes: list[bytes], now: float, have: Callable[[bytes], bool]
    ) -> list[Action]:
        state = self._peers.get(peer)
        if state is None:
            return []
        actions: list[Action] = []
        wanted: list[bytes] = []
        for block_hash in hashes:
            state.known.add(block_hash)
            if have(block_hash):
                continue
            request = self._requests.get(block_hash)
            if request is not None:
                if peer not in request.announcers and len(request.announcers) < (
                    MAX_ANNOUNCERS_PER_BLOCK
                ):
                    request.announcers.append(peer)
                continue
            if len(self._requests) >= MAX_BLOCKS_IN_FLIGHT:
                break  # the rest is announced again by someone once these are in
            self._requests[block_hash] = _Request(peer, now + BLOCK_FETCH_TIMEOUT)
            wanted.append(block_hash)
        if wanted:
            kind = InvKind.COMPACT_BLOCK if self.compact else InvKind.BLOCK
            actions.append(Send(peer, GetData(kind, wanted)))
            actions += self._arm_timer(now)
        return actions

    def on_get_data(
        self, peer: PeerId, kind: InvKind, hashes: list[bytes], lookup: BlockLookup
    ) -> list[Action]:
        state = self._peers.get(peer)
        actions: list[Action] = []
        missing: list[bytes] = []
        for block_hash in hashes:
            block = lookup(block_hash)
            if block is None:
                missing.append(block_hash)
                continue
            if state is not None:
                state.known.add(block_hash)
            if kind is InvKind.COMPACT_BLOCK:
                actions.append(Send(peer, compact_block(block, self.rng.randrange(MAX_UINT))))
            else:
                actions.append(Send(peer, BlockMessage(block)))
        if missing:
            actions.append(Send(peer, NotFound(kind, missing)))
        return actions

    def on_not_found(self, peer: PeerId, hashes: list[bytes], now: float) -> list[Action]:
        actions: list[Action] = []
        for block_hash in hashes:
            request = self._requests.get(block_hash)
            if request is not None and request.peer == peer:
                actions += self._retry(block_hash, request, now)
        return actions

    def on_compact(
        self,
        peer: PeerId,
        compact: CompactBlock,
        block_hash: bytes,
        now: float,
        have_parent: bool,
        candidates: Callable[[], Iterable[Transaction]],
    ) -> tuple[Block | None, list[Action]]:
        """A compact block (pushed or asked for): the block if rebuilt, else requests."""
        state = self._peers.get(peer)
        if state is not None:
            state.known.add(block_hash)
        request = self._requests.get(block_hash)
        if request is None:
            if len(self._requests) >= MAX_BLOCKS_IN_FLIGHT:
                return None, []
            request = self._requests[block_hash] = _Request(peer, now + BLOCK_FETCH_TIMEOUT)
        elif request.partial is not None:
            return None, []  # already rebuilding this one from another peer
        if not have_parent:
            return None, self._ask_full(block_hash, request, peer, now)
        try:
            partial = PartialBlock.rebuild(compact, candidates())
            if not partial.missing:
                self._requests.pop(block_hash, None)
                return partial.block(), []
        except CompactBlockError:
            return None, self._ask_full(block_hash, request, peer, now)
        pending = sum(1 for r in self._requests.values() if r.partial is not None)
        if pending >= MAX_PENDING_COMPACT:
            return None, self._ask_full(block_hash, request, peer, now)
        request.peer, request.partial = peer, partial
        request.expires = now + BLOCK_FETCH_TIMEOUT
        return None, [Send(peer, GetBlockTxn(block_hash, partial.missing)), *self._arm_timer(now)]

    def on_block_txn(
        self, peer: PeerId, answer: BlockTxn, now: float
    ) -> tuple[Block | None, list[Action]]:
        request = self._requests.get(answer.block_hash)
        if request is None or request.peer != peer or request.partial is None:
            return None, []  # not asked (or asked someone else): ignored
        partial, request.partial = request.partial, None
        try:
            partial.fill(answer)
            block = partial.block()
        except CompactBlockError:
            return None, self._ask_full(answer.block_hash, request, peer, now)
        del self._requests[answer.block_hash]
        return block, []

    def on_get_block_txn(self, peer: PeerId, ask: GetBlockTxn, lookup: BlockLookup) -> list[Action]:
        block = lookup(ask.block_hash)
        txs = None if block is None else block_transactions(block, ask.indexes)
        if txs is None:
            return [Send(peer, NotFound(InvKind.COMPACT_BLOCK, [ask.block_hash]))]
        return [Send(peer, BlockTxn(ask.block_hash, txs))]

    def arrived(self, block_hash: bytes) -> None:
        """We have the block now, however it came: no more requests for it."""
        self._requests.pop(block_hash, None)

    def _ask_full(
        self, block_hash: bytes, request: _Request, peer: PeerId, now: float
    ) -> list[Action]:
        request.peer, request.partial = peer, None
        request.expires = now + BLOCK_FETCH_TIMEOUT
        return [Send(peer, GetData(InvKind.BLOCK, [block_hash])), *self._arm_timer(now)]

    def _retry(self, block_hash: bytes, request: _Request, now: float) -> list[Action]:
        """Ask the next announcer, or give the block up until someone announces it."""
        request.partial = None
        while request.announcers:
            peer = request.announcers.pop(0)
            if peer in self._peers:
                return self._ask_full(block_hash, request, peer, now)
        del self._requests[block_hash]
        return []

    def timer(self, now: float) -> list[Action]:
        self._timer_pending = False
        actions: list[Action] = []
        for block_hash, request in list(self._requests.items()):
            if request.expires <= now:
                actions += self._retry(block_hash, request, now)
        return actions + self._arm_timer(now)

    def _arm_timer(self, now: float) -> list[Action]:
        if self._timer_pending or not self._requests:
            return []
        self._timer_pending = True
        due = min(request.expires for request in self._requests.values())
        return [ScheduleTimer(BLOCK_REQUEST_TIMER, max(due, now))]

    def in_flight(self) -> int:
        return len(self._requests)

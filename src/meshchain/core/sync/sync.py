"""Headers-first chain sync: how a node that is behind catches up with its peers.

1. Headers. A peer whose hello (or an orphan block it sent) shows more than we know is
   asked `GetHeaders` with a locator of our best header chain. Each answer of up to
   2,000 headers is checked header by header (`HeaderTree.add`) before anything else;
   a full answer is followed at once by the next request. One peer at a time walks the
   chain this way; every other peer gets a one-header probe (`stop` = our best header)
   whenever our best header moves, which tells us whether it has that chain too.
2. Bodies. Once the best header chain has more work than our tip, its blocks are asked
   for with `GetBlocks` from every peer known to have them (`download.py`: a window of
   1,024 blocks, 16 in flight per peer, stall detection with a timeout that doubles).
3. Validation runs as blocks arrive: the block right after our stored chain is handed to
   `Node.accept_block` at once, later ones wait in a bounded reorder buffer and follow
   as soon as they are contiguous, while the other requests are still in flight.

Bounded memory: at most MAX_HEADERS_IN_MEMORY headers; header sync pauses while the best
chain is MAX_HEADERS_AHEAD past our tip; a peer whose headers keep a chain lighter than
our tip for MAX_LOW_WORK_HEADERS headers is cut off (Offence.LOW_WORK_HEADERS) and its
branch forgotten. Invalid or unconnecting headers, bad blocks and stalls are charged per
the offence table. A restart resumes from the stored tip: the chain already holds every
connected block, so only what is missing is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from meshchain.core.chain.block import BLOCK_CODEC, HEADER_CODEC, Block, block_hash
from meshchain.core.events import Action, Disconnect, PeerId, ScheduleTimer, Send
from meshchain.core.peers.bans import Offence
from meshchain.core.sync.download import BLOCK_DOWNLOAD_WINDOW, BlockDownload, ReorderBuffer
from meshchain.core.sync.headers import HeaderTree
from meshchain.core.sync.locator import batch_was_cut, headers_after
from meshchain.core.sync.progress import SyncMeter
from meshchain.core.wire.messages import (
    MAX_HEADERS_RESULTS,
    BlocksNotFound,
    GetBlocks,
    GetHeaders,
    Headers,
    SyncBlock,
)
from meshchain.errors import DecodeError, ValidationError

if TYPE_CHECKING:
    from meshchain.core.node import Node

SYNC_TIMER = "sync/tick"
# Ours: stall, timeout and progress checks once a second while sync has work out.
SYNC_TICK = 1.0
# Bitcoin's HEADERS_RESPONSE_TIME: a GetHeaders unanswered this long costs the peer.
HEADERS_RESPONSE_TIMEOUT = 120.0
# Ours: header sync waits while the best header chain is this far past our tip (four
# Headers messages: the 1,024-block window stays fed through several round trips).
MAX_HEADERS_AHEAD = 4 * MAX_HEADERS_RESULTS
# Ours: new headers a peer may send while its chain stays lighter than our tip. An
# honest peer's chain passes ours within the length of our own branch past the fork.
MAX_LOW_WORK_HEADERS = 4 * MAX_HEADERS_RESULTS
# Bitcoin's MAX_NUM_UNCONNECTING_HEADERS_MSGS: answers that do not link to anything we
# know (each is followed by a fresh request) before the peer is charged.
MAX_UNCONNECTING_HEADERS = 10
ZERO_HASH = bytes(32)

Handler = Callable[[PeerId, Any, float], list[Action]]


@dataclass(slots=True)
class SyncPeer:
    claimed_height: int  # its hello's best height, raised by what it shows us
    best: bytes | None = None  # its most-work header we know (here or stored)
    best_height: int = -1
    serves_to: int = -1  # the highest height of our download path it has
    asked_at: float | None = None  # when our outstanding GetHeaders went out
    asked_from: bytes = b""  # the header its locator started from
    probe: bool = False  # the outstanding GetHeaders is a one-header probe
    probed_at: int = -1  # our best header height when we last probed it
    low_work: int = 0  # new headers sent while its chain is lighter than our tip
    unconnecting: int = 0
    dropped: bool = False  # punished: its disconnection is on the way


class Sync:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.chain = node.chain
        self.tree = HeaderTree(node.chain)
        self.download = BlockDownload()
        self.buffer = ReorderBuffer()
        self.meter = SyncMeter()
        self.peers: dict[PeerId, SyncPeer] = {}
        self._timer_armed = False
        self._rebuilds = self.tree.rebuilds
        # A BFT block is proven by its child's header: the newest block is left to
        # consensus catch-up, every other one is fetched only once its child is checked.
        self._held_back = 1 if node.engine.certified_by_child else 0

    def message_handlers(self) -> dict[type, Handler]:
        return {
            GetHeaders: self._get_headers,
            Headers: self._headers,
            GetBlocks: self._get_blocks,
            SyncBlock: self._sync_block,
            BlocksNotFound: self._blocks_not_found,
        }

    @property
    def syncing(self) -> bool:
        """Downloading toward a better chain: block production waits meanwhile."""
        return self.meter.active

    # --- peers --------------------------------------------------------------------------

    def peer_connected(self, peer: PeerId, best_height: int, now: float) -> list[Action]:
        self.peers[peer] = SyncPeer(best_height)
        return self._after(now)

    def peer_disconnected(self, peer: PeerId, now: float) -> list[Action]:
        if self.peers.pop(peer, None) is None:
            return []
        self.download.release(peer)
        return self._after(now)

    def orphan(self, peer: PeerId, block: Block, now: float) -> list[Action]:
        """The peer sent a block whose parent we lack: it has more than we know."""
        return self.peer_claims(peer, block.header.height, now)

    def peer_claims(self, peer: PeerId, height: int, now: float) -> list[Action]:
        """The peer says it holds blocks up to `height` (an orphan it sent, or a BFT
        status of a later height): fetch them headers first if that is ahead of us."""
        state = self.peers.get(peer)
        if state is None:
            return []
        state.claimed_height = max(state.claimed_height, height)
        return self._after(now)

    def timer(self, timer: str, now: float) -> list[Action] | None:
        if timer != SYNC_TIMER:
            return None
        self._timer_armed = False
        actions: list[Action] = []
        for peer, state in list(self.peers.items()):
            asked = state.asked_at
            if asked is not None and now - asked > HEADERS_RESPONSE_TIMEOUT and not state.dropped:
                actions += self._punish(peer, Offence.STALLING, now, "no answer to GetHeaders")
        for peer, reason in self.download.overdue(now):
            overdue = self.peers.get(peer)
            if overdue is not None and not overdue.dropped:
                actions += self._punish(peer, Offence.STALLING, now, reason)
        return actions + self._after(now)

    # --- serving ------------------------------------------------------------------------

    def _get_headers(self, peer: PeerId, message: GetHeaders, now: float) -> list[Action]:
        return [Send(peer, Headers(headers_after(self.chain, message.locator, message.stop)))]

    def _get_blocks(self, peer: PeerId, message: GetBlocks, now: float) -> list[Action]:
        """Stored valid blocks, sent as stored (any branch); the rest are not found."""
        chain = self.chain
        actions: list[Action] = []
        missing: list[bytes] = []
        for wanted in message.hashes:
            entry = chain.entry(wanted)
            raw = None if entry is None or entry.invalid else chain.store.get_block(wanted)
            if raw is None:
                missing.append(wanted)
            else:
                actions.append(Send(peer, SyncBlock(msgspec.Raw(raw))))
        if missing:
            actions.append(Send(peer, BlocksNotFound(missing)))
        return actions

    # --- headers ------------------------------------------------------------------------

    def _headers(self, peer: PeerId, message: Headers, now: float) -> list[Action]:
        state = self.peers.get(peer)
        if state is None or state.dropped or state.asked_at is None:
            return []  # not an answer to us: ignored
        state.asked_at = None
        headers = message.headers
        if not headers:  # nothing past our locator: its chain is within ours
            if not state.probe:
                self._has_no_more(state)
            return self._after(now)
        tree = self.tree
        result = tree.add(headers, now, peer)
        if result.unconnecting:
            state.unconnecting += 1
            if state.unconnecting > MAX_UNCONNECTING_HEADERS:
                detail = "headers that do not connect to our chain"
                return self._punish(peer, Offence.PROTOCOL_VIOLATION, now, detail) + self._after(
                    now
                )
            # It may have moved to another branch, or built on headers we pruned.
            ask = self._ask(peer, self._best_hash(), ZERO_HASH, now, probe=False)
            return [ask, *self._after(now)]
        if result.last is not None:
            self._saw(state, result.last)
        if result.error is not None:
            return self._header_error(peer, state, result.error, now) + self._after(now)
        actions: list[Action] = []
        reached = tree.known(result.last) if result.last is not None else None
        if reached is not None and reached[1] <= self.chain.tip_entry.chain_weight:
            state.low_work += result.added  # headers that lead to no more work than ours
            if state.low_work > MAX_LOW_WORK_HEADERS:
                tree.prune(lambda entry: entry.source != peer)
                detail = f"{state.low_work} headers without passing our chain's work"
                return self._punish(peer, Offence.LOW_WORK_HEADERS, now, detail) + self._after(now)
        else:
            state.low_work = 0
        more = batch_was_cut(len(headers), result.size, HEADER_CODEC.max_size)
        if result.full:  # keep only the path we download
            downloading = self._download_end() >= tree.path_low
            tree.prune(lambda entry: downloading and self._on_path(entry.hash))
            more = True
        last = result.last
        if more and last is not None and last != state.asked_from:
            if not (self._on_path(last) and self._far_ahead()):  # else: resumed later
                actions.append(self._ask(peer, last, ZERO_HASH, now, probe=False))
        elif not state.probe:  # it has shown all it has (or, repeating itself, all it will)
            self._has_no_more(state)
        return actions + self._after(now)

    def _has_no_more(self, state: SyncPeer) -> None:
        """A walk through its headers ended: do not ask it again for what its hello said
        (a probe ends early on purpose and says nothing of the kind)."""
        state.claimed_height = min(state.claimed_height, max(state.best_height, self.chain.height))

    def _header_error(
        self, peer: PeerId, state: SyncPeer, error: ValidationError, now: float
    ) -> list[Action]:
        """A header broke a rule: charged as a bad block would be. One the offence table
        cannot blame (a timestamp ahead of our clock) just ends the exchange."""
        actions = self.node.punish_invalid(peer, error, now, "header")
        if actions:
            return self._dropped(peer, actions)
        state.claimed_height = max(state.best_height, 0)
        return []

    def _saw(self, state: SyncPeer, seen: bytes) -> None:
        """The peer has `seen`: it becomes its best if it has more work."""
        known = self.tree.known(seen)
        if known is None:
            return
        current = self.tree.known(state.best) if state.best is not None else None
        if current is not None and known[1] <= current[1]:
            return
        state.best, state.best_height = seen, known[0].height
        state.claimed_height = max(state.claimed_height, state.best_height)
        state.serves_to = self._serves_to(state)

    def _serves_to(self, state: SyncPeer) -> int:
        """The highest download-path height on the peer's best branch."""
        tree = self.tree
        current = state.best
        entry = tree.get(current) if current is not None else None
        while entry is not None:
            height = entry.header.height
            if tree.path.get(height) == entry.hash:
                return height
            entry = tree.get(entry.header.parent)
        return tree.path_low - 1

    def _ask(self, peer: PeerId, tip: bytes, stop: bytes, now: float, probe: bool) -> Send:
        state = self.peers[peer]
        state.asked_at, state.asked_from, state.probe = now, tip, probe
        return Send(peer, GetHeaders(self.tree.locator(tip), stop))

    def _best_hash(self) -> bytes:
        """Our best header: the tree's if its chain has more work than our tip."""
        best = self.tree.best
        if best is not None and best.chain_weight > self.chain.tip_entry.chain_weight:
            return best.hash
        return self.chain.tip_hash

    def _on_path(self, block_hash: bytes) -> bool:
        entry = self.tree.get(block_hash)
        return entry is not None and self.tree.path.get(entry.header.height) == block_hash

    def _far_ahead(self) -> bool:
        return self.tree.path_high - self.chain.height >= MAX_HEADERS_AHEAD

    def _request_headers(self, now: float) -> list[Action]:
        """One peer walks the chain past our best header; the others are probed."""
        actions: list[Action] = []
        peers, tree = self.peers, self.tree
        best_hash = self._best_hash()
        known = tree.known(best_hash)
        best_height = known[0].height if known is not None else self.chain.height
        walking = any(s.asked_at is not None and not s.probe for s in peers.values())
        if not walking and not self._far_ahead():
            ahead = [
                (state.claimed_height, peer)
                for peer, state in peers.items()
                if not state.dropped
                and state.asked_at is None
                and state.claimed_height > best_height
            ]
            if ahead:
                _, peer = max(ahead, key=lambda item: item[0])
                actions.append(self._ask(peer, best_hash, ZERO_HASH, now, probe=False))
        if self._download_end() < tree.path_low or tree.best is None:
            return actions
        high, target = tree.path_high, tree.best
        for peer, state in peers.items():
            if (
                not state.dropped
                and state.asked_at is None
                and state.best_height < high
                and state.claimed_height > max(state.best_height, tree.path_low - 1)
                and state.probed_at < high
            ):
                state.probed_at = high
                actions.append(self._ask(peer, target.header.parent, target.hash, now, True))
        return actions

    # --- bodies -------------------------------------------------------------------------

    def _download_end(self) -> int:
        """The last path height to fetch; below `path_low` when there is nothing to."""
        best = self.tree.best
        if best is None or best.chain_weight <= self.chain.tip_entry.chain_weight:
            return -1
        return self.tree.path_high - self._held_back

    def _have(self, wanted: bytes) -> bool:
        return (
            self.download.in_flight(wanted) or wanted in self.buffer or self.chain.has_block(wanted)
        )

    def _request_blocks(self, now: float) -> list[Action]:
        tree = self.tree
        low = tree.path_low
        window_end = min(self._download_end(), low + BLOCK_DOWNLOAD_WINDOW - 1)
        if window_end < low:
            return []
        if self.buffer.over_budget():  # fetch only what lets the buffer drain
            lowest = self.buffer.lowest_height()
            if lowest is not None:
                window_end = min(window_end, lowest - 1)
        actions: list[Action] = []
        download = self.download
        for peer, state in self.peers.items():
            end = min(window_end, state.serves_to)
            if state.dropped or end < low or not download.wants_more(peer):
                continue
            wanted = download.assign(peer, now, low, end, tree.path.get, self._have)
            if wanted:
                actions.append(Send(peer, GetBlocks(wanted)))
            elif state.serves_to > window_end:
                # It could fetch more if the window moved: who holds its start stalls us.
                download.note_stall(tree.path[low], peer, now)
        return actions

    def _sync_block(self, peer: PeerId, message: SyncBlock, now: float) -> list[Action]:
        state = self.peers.get(peer)
        if state is None or state.dropped:
            return []
        raw = bytes(message.block)
        try:
            block = BLOCK_CODEC.decode(raw)
        except DecodeError as error:
            return self._punish(peer, Offence.MALFORMED_MESSAGE, now, error.reason) + self._after(
                now
            )
        this_hash = block_hash(block)
        self.download.received(peer, this_hash, now)
        self._advance()
        height = block.header.height
        if self.tree.path.get(height) != this_hash or self._have(this_hash):
            return self._after(now)  # not (or no longer) wanted: ignored
        if height != self.tree.path_low:
            self.buffer.put(this_hash, block, raw, peer)
            return self._after(now)
        actions = self._connect(this_hash, block, raw, peer, now)
        while self.tree.path_low <= self.tree.path_high:
            next_hash = self.tree.path[self.tree.path_low]
            held = self.buffer.pop(next_hash)
            if held is None:
                break
            actions += self._connect(next_hash, *held, now)
        return actions + self._after(now)

    def _connect(
        self, this_hash: bytes, block: Block, raw: bytes, peer: PeerId, now: float
    ) -> list[Action]:
        """Validate and connect a block whose parent is stored; a refused body is asked
        of someone else, a block that proves invalid takes its branch with it."""
        actions = self._dropped(
            peer, self.node.accept_block(block, now, peer, raw=raw, relay=False, certified=True)
        )
        entry = self.chain.entry(this_hash)
        if entry is None:
            self.download.give_back([block.header.height])
        elif entry.invalid:
            self.tree.drop_subtree(this_hash)
        else:
            self.download.block_connected()
        self._advance()
        return actions

    def _blocks_not_found(self, peer: PeerId, message: BlocksNotFound, now: float) -> list[Action]:
        state = self.peers.get(peer)
        if state is None:
            return []
        heights = self.download.not_found(peer, message.hashes)
        if heights:  # it does not have that branch (any more): ask it no further
            state.serves_to = min(state.serves_to, min(heights) - 1)
            state.claimed_height = min(state.claimed_height, state.serves_to)
        return self._after(now)

    # --- bookkeeping --------------------------------------------------------------------

    def _advance(self) -> None:
        """Headers whose blocks the chain has stored (by sync, relay or adoption of an
        orphan) leave the tree; a stored block that proved invalid takes its branch."""
        tree, chain = self.tree, self.chain
        while tree.path_low <= tree.path_high:
            low_hash = tree.path[tree.path_low]
            entry = chain.entry(low_hash)
            if entry is None:
                break
            if entry.invalid:
                tree.drop_subtree(low_hash)
            else:
                tree.stored(low_hash)

    def _replan(self) -> None:
        """After the path changed branch: drop plans for blocks no longer on it."""
        tree = self.tree
        if tree.rebuilds == self._rebuilds:
            return
        self._rebuilds = tree.rebuilds
        on_path = set(tree.path.values())
        self.download.restart(tree.path_low)
        self.download.forget_all(lambda wanted: wanted not in on_path)
        self.buffer.discard(lambda held: held in on_path)
        for state in self.peers.values():
            if state.best is not None and tree.known(state.best) is None:
                state.best, state.best_height = None, -1
            state.serves_to = self._serves_to(state)

    def _after(self, now: float) -> list[Action]:
        """What every event ends with: ask for headers and blocks, report progress."""
        self._advance()
        self._replan()
        actions = self._request_headers(now) + self._request_blocks(now)
        actions += self._progress(now)
        if not self._timer_armed and (
            self.download.total_in_flight
            or self.meter.active
            or any(state.asked_at is not None for state in self.peers.values())
        ):
            self._timer_armed = True
            actions.append(ScheduleTimer(SYNC_TIMER, now + SYNC_TICK))
        return actions

    def _progress(self, now: float) -> list[Action]:
        end = self._download_end()
        height = self.chain.height
        if end >= self.tree.path_low:
            self.meter.begin(now, height)
            notice = self.meter.connected(now, height, end)
            return [] if notice is None else [notice]
        done = self.meter.finish(now, height)
        if done is None:
            return []
        return [done, *self.node.sync_caught_up(now)]

    def _punish(self, peer: PeerId, offence: Offence, now: float, detail: str) -> list[Action]:
        return self._dropped(peer, self.node.peer_manager.punish(peer, offence, now, detail))

    def _dropped(self, peer: PeerId, actions: list[Action]) -> list[Action]:
        """If `actions` hang up on the peer, stop counting on it at once: its blocks go
        to others before its disconnection comes back to us."""
        state = self.peers.get(peer)
        if state is not None and any(type(a) is Disconnect and a.peer == peer for a in actions):
            state.dropped = True
            state.asked_at = None
            self.download.release(peer)
        return actions

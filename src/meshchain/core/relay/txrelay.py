"""Transaction relay by announcement: trickled inventories out, requested fetches in.

A transaction that enters the mempool is queued for every transaction-relay peer that
does not know it; each outbound peer's queue is sent as one `Inventory` when that peer's
Poisson timer fires (mean 2 s), and all inbound peers' queues on one shared timer (mean
5 s), as Bitcoin Core does (net_processing.cpp, SendMessages). The timers run only while
a queue holds something: an exponential wait is memoryless, so starting one when the
first item arrives gives announcements the same timing as a timer that never stops.

Peers ask with `GetData`; we answer from the mempool with `Transactions`, and only for
transactions this peer knows of (we announced them, or it did): nothing else can be
probed, and never a stem transaction, which lives outside the mempool. Incoming
announcements go to the request tracker (`txrequest.py`).

What a peer may make us do is bounded: announcements per peer (5,000), requests in
flight per peer (100), the known-inventory set per peer, and two strike buckets, one
for transactions nobody asked it for and one for requests it let time out.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from meshchain.core.chain.mempool import Mempool
from meshchain.core.events import Action, PeerId, ScheduleTimer, Send
from meshchain.core.peers.bans import Offence
from meshchain.core.peers.limits import TokenBucket
from meshchain.core.relay.config import RelayConfig
from meshchain.core.relay.inventory import FifoSet, RecentlyConfirmed, RollingSet
from meshchain.core.relay.txrequest import TxRequestTracker
from meshchain.core.wire.messages import (
    MAX_INV_ENTRIES,
    MAX_TXS_PER_MESSAGE,
    GetData,
    Inventory,
    InvKind,
    NotFound,
    Transactions,
)

# Bitcoin's m_tx_inventory_known_filter holds 50,000 ids per peer. Ours also forgets a
# transaction once a block confirms it, so in practice it holds about a mempool's worth.
MAX_KNOWN_TXS_PER_PEER = 50_000
# Bitcoin's m_lazy_recent_rejects (120,000, reset per block); ours is reset per block too.
MAX_RECENT_REJECTS = 50_000
# Ours: announcements of transactions confirmed this many blocks back are ignored.
RECENT_CONFIRMED_DEPTH = 10
# Ours: unsolicited transactions a peer may send (burst, then per second) before it is
# charged UNREQUESTED_DATA; a late answer to a request that timed out is one of these.
UNSOLICITED_BURST = 1_000.0
UNSOLICITED_PER_SECOND = 10.0
# Ours: requests a peer may let time out (burst, then per second) before it is charged
# STALLING: announcing what it never delivers wastes our requests and others' time.
STALL_BURST = 200.0
STALLS_PER_SECOND = 1.0

# Bitcoin's unbroadcast set (m_unbroadcast_txids) has no cap; ours is bounded: our own
# transactions that no peer has asked for yet, announced again to each new peer.
MAX_UNBROADCAST = 1_000

REQUEST_TIMER = "relay/tx-requests"
INBOUND_TRICKLE_TIMER = "relay/trickle-inbound"
OUTBOUND_TRICKLE_PREFIX = "relay/trickle/"

Punish = Callable[[PeerId, Offence, float, str], list[Action]]


@dataclass(slots=True)
class _TxPeer:
    outbound: bool
    known: RollingSet
    unsolicited: TokenBucket
    stalls: TokenBucket
    queue: dict[bytes, None] = field(default_factory=dict)  # to announce, in order
    timer_pending: bool = False


class TxRelay:
    def __init__(
        self, config: RelayConfig, mempool: Mempool, rng: random.Random, punish: Punish
    ) -> None:
        self.config = config
        self.mempool = mempool
        self.rng = rng
        self.punish = punish
        self.tracker = TxRequestTracker()
        self.confirmed = RecentlyConfirmed(RECENT_CONFIRMED_DEPTH)
        self.recent_rejects = RollingSet(MAX_RECENT_REJECTS)
        self._peers: dict[PeerId, _TxPeer] = {}
        self._request_timer_at: float | None = None
        self._inbound_timer_pending = False
        # Our own transactions until a peer asks for one (or announces it): a node that
        # had no peer when it fluffed one would otherwise never tell anyone.
        self._unbroadcast = FifoSet(MAX_UNBROADCAST)

    # --- peers ----------------------------------------------------------------------

    def peer_connected(self, peer: PeerId, outbound: bool, now: float) -> list[Action]:
        self._peers[peer] = _TxPeer(
            outbound,
            RollingSet(MAX_KNOWN_TXS_PER_PEER),
            TokenBucket(UNSOLICITED_PER_SECOND, UNSOLICITED_BURST, now),
            TokenBucket(STALLS_PER_SECOND, STALL_BURST, now),
        )
        self.tracker.add_peer(peer, preferred=outbound)
        ours = [txid for txid in self._unbroadcast if txid in self.mempool]
        return self._queue(peer, self._peers[peer], ours, now) if ours else []

    def peer_disconnected(self, peer: PeerId, now: float) -> list[Action]:
        if self._peers.pop(peer, None) is None:
            return []
        self.tracker.remove_peer(peer)
        return self._requests(now)

    def relays_to(self, peer: PeerId) -> bool:
        return peer in self._peers

    # --- what we know ---------------------------------------------------------------

    def seen(self, txid: bytes) -> bool:
        """In the mempool, confirmed lately, or rejected since the last block."""
        return txid in self.mempool or txid in self.confirmed or txid in self.recent_rejects

    def rejected(self, txid: bytes) -> None:
        self.recent_rejects.add(txid)
        self.tracker.forget(txid)

    def block_connected(self, height: int, txids: list[bytes]) -> None:
        self.confirmed.block_connected(height, txids)
        self.recent_rejects.clear()  # a new block may make a rejected one valid
        for txid in txids:
            self.tracker.forget(txid)
        for state in self._peers.values():
            known, queue = state.known, state.queue
            for txid in txids:
                known.discard(txid)
                queue.pop(txid, None)

    def block_disconnected(self, height: int) -> None:
        self.confirmed.block_disconnected(height)

    # --- incoming -------------------------------------------------------------------

    def on_inventory(self, peer: PeerId, txids: list[bytes], now: float) -> list[Action]:
        state = self._peers.get(peer)
        if state is None:
            return []  # a block-relay-only link carries no transaction inventory
        known, tracker, seen = state.known, self.tracker, self.seen
        for txid in txids:
            known.add(txid)
            self._unbroadcast.discard(txid)
            if not seen(txid):
                tracker.announced(peer, txid, now)  # past the cap: ignored, as Bitcoin
        return self._requests(now)

    def on_get_data(self, peer: PeerId, txids: list[bytes]) -> list[Action]:
        state = self._peers.get(peer)
        known = state.known if state is not None else ()
        found = self.mempool.transactions([txid for txid in txids if txid in known])
        actions: list[Action] = [
            Send(peer, Transactions(found[i : i + MAX_TXS_PER_MESSAGE]))
            for i in range(0, len(found), MAX_TXS_PER_MESSAGE)
        ]
        if self._unbroadcast:
            for txid in txids:
                self._unbroadcast.discard(txid)
        if len(found) < len(txids):
            has = self.mempool.has
            missing = [t for t in txids if t not in known or not has(t)]
            actions.append(Send(peer, NotFound(InvKind.TRANSACTION, missing)))
        return actions

    def on_not_found(self, peer: PeerId, txids: list[bytes], now: float) -> list[Action]:
        for txid in txids:
            self.tracker.not_found(peer, txid)
        self.tracker.capacity_freed(peer)
        return self._requests(now)

    def delivered(self, peer: PeerId, txid: bytes, now: float) -> list[Action]:
        """A transaction arrived from `peer`: stop wanting it; charge it if unasked."""
        state = self._peers.get(peer)
        solicited = self.tracker.is_announcer(peer, txid)
        self.tracker.forget(txid)
        if state is None:
            return []
        state.known.add(txid)
        if solicited or state.unsolicited.take(now):
            return []
        return self.punish(peer, Offence.UNREQUESTED_DATA, now, "unsolicited transactions")

    def after_delivery(self, peer: PeerId, now: float) -> list[Action]:
        """After a batch from `peer`: its freed request slots go to what waited for them."""
        self.tracker.capacity_freed(peer)
        return self._requests(now)

    # --- requests -------------------------------------------------------------------

    def _requests(self, now: float) -> list[Action]:
        tracker = self.tracker
        actions: list[Action] = []
        for peer, txids in tracker.requests(now).items():
            for start in range(0, len(txids), MAX_INV_ENTRIES):
                chunk = txids[start : start + MAX_INV_ENTRIES]
                actions.append(Send(peer, GetData(InvKind.TRANSACTION, chunk)))
        if tracker.timed_out:
            stalled, tracker.timed_out = tracker.timed_out, []
            for peer in stalled:
                state = self._peers.get(peer)
                if state is not None and not state.stalls.take(now):
                    actions += self.punish(peer, Offence.STALLING, now, "announced, never sent")
        wakeup = tracker.next_wakeup()
        if wakeup is not None:
            wakeup = max(wakeup, now)
            if self._request_timer_at is None or wakeup < self._request_timer_at:
                self._request_timer_at = wakeup
                actions.append(ScheduleTimer(REQUEST_TIMER, wakeup))
        return actions

    # --- announcing -----------------------------------------------------------------

    def announce(self, txid: bytes, source: PeerId | None, now: float) -> list[Action]:
        """Queue a new mempool transaction for every peer but its source that lacks it."""
        return self.announce_many([txid], source, now)

    def announce_many(self, txids: list[bytes], source: PeerId | None, now: float) -> list[Action]:
        """`announce` for new mempool transactions from one source (a `Transactions`
        message): one pass over the peers, not one per transaction."""
        if source is None:
            self._unbroadcast.update(txids)
        actions: list[Action] = []
        for peer, state in self._peers.items():
            if peer == source:
                continue
            known = state.known
            fresh = [txid for txid in txids if txid not in known]
            if fresh:
                actions += self._queue(peer, state, fresh, now)
        return actions

    def _queue(self, peer: PeerId, state: _TxPeer, txids: list[bytes], now: float) -> list[Action]:
        """Queue announcements; the timer that sends them, if none is running."""
        state.queue.update(dict.fromkeys(txids))
        if state.timer_pending:
            return []
        state.timer_pending = True
        if state.outbound:
            due = now + self.rng.expovariate(1.0 / self.config.outbound_trickle)
            return [ScheduleTimer(OUTBOUND_TRICKLE_PREFIX + peer, due)]
        if self._inbound_timer_pending:
            return []
        self._inbound_timer_pending = True
        due = now + self.rng.expovariate(1.0 / self.config.inbound_trickle)
        return [ScheduleTimer(INBOUND_TRICKLE_TIMER, due)]

    def timer(self, timer: str, now: float) -> list[Action] | None:
        """Handle a relay timer; None if the timer is not ours."""
        if timer == REQUEST_TIMER:
            self._request_timer_at = None
            return self._requests(now)
        if timer == INBOUND_TRICKLE_TIMER:
            self._inbound_timer_pending = False
            actions: list[Action] = []
            for peer, state in self._peers.items():
                if not state.outbound and state.timer_pending:
                    actions += self._flush(peer, state)
            return actions
        if timer.startswith(OUTBOUND_TRICKLE_PREFIX):
            peer = timer[len(OUTBOUND_TRICKLE_PREFIX) :]
            outbound = self._peers.get(peer)
            return [] if outbound is None else self._flush(peer, outbound)
        return None

    def _flush(self, peer: PeerId, state: _TxPeer) -> list[Action]:
        state.timer_pending = False
        queue, state.queue = state.queue, {}
        known, has = state.known, self.mempool.has
        txids = [txid for txid in queue if has(txid) and txid not in known]
        known.update(txids)
        return [
            Send(peer, Inventory(InvKind.TRANSACTION, txids[i : i + MAX_INV_ENTRIES]))
            for i in range(0, len(txids), MAX_INV_ENTRIES)
        ]

    # --- introspection --------------------------------------------------------------

    def queued(self, peer: PeerId) -> int:
        state = self._peers.get(peer)
        return 0 if state is None else len(state.queue)

    def known_by(self, peer: PeerId, txid: bytes) -> bool:
        state = self._peers.get(peer)
        return state is not None and txid in state.known

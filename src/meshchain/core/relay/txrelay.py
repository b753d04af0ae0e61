"""Transaction relay by announcement: trickled inventories out, requested fetches in.

A transaction that enters the mempool is appended to one announcement log shared by all
peers; each peer keeps its read position in it. When an outbound peer's Poisson timer
fires (mean 2 s), or the one timer shared by all inbound peers (mean 5 s), as in Bitcoin
Core (net_processing.cpp, SendMessages), the peer is sent one `Inventory` of what the log
gained since its last one, less what it told us it has and what left the mempool since.
A peer's timer runs only while the log holds something new for it: an exponential wait
is memoryless, so starting one when the first item arrives gives announcements the same
timing as a timer that never stops. One log instead of a queue per peer: a transaction
costs one append, not one insertion per peer, and nothing per peer is stored for it.

Peers ask with `GetData`; we answer from the mempool with `Transactions`, and only for
transactions this peer knows of: those it told us of, and those our announcements to it
covered (they entered the log after the peer connected and before its last `Inventory`:
Bitcoin Core's m_last_inv_sequence rule). Nothing else can be probed, and never a stem
transaction, which lives outside the mempool. Incoming announcements go to the request
tracker (`txrequest.py`).

What a peer may make us do is bounded: announcements per peer (5,000), requests in
flight per peer (100), the known-inventory set per peer, and two strike buckets, one
for transactions nobody asked it for and one for requests it let time out.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
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

# Bitcoin's m_tx_inventory_known_filter holds 50,000 ids per peer. Ours holds what the
# peer told us it has (our announcements to it are covered by its log position instead),
# and forgets a transaction once a block confirms it.
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
# Ours: the log's positions of transactions that left it are dropped, once they are no
# longer in the mempool either, when they outnumber the mempool by this much.
LOG_INDEX_SLACK = 1_024
# Ours: a request that repeats one of a peer's last this many Inventories exactly is
# answered without checking each transaction against what that peer was told.
RECENT_INVENTORIES = 4

REQUEST_TIMER = "relay/tx-requests"
INBOUND_TRICKLE_TIMER = "relay/trickle-inbound"
OUTBOUND_TRICKLE_PREFIX = "relay/trickle/"

Punish = Callable[[PeerId, Offence, float, str], list[Action]]


@dataclass(slots=True)
class _TxPeer:
    outbound: bool
    known: RollingSet  # what the peer told us it has (announced, or sent us)
    unsolicited: TokenBucket
    stalls: TokenBucket
    joined: int  # the log position when it connected: nothing before is announced to it
    read: int  # the log position its announcements have reached
    extra: dict[bytes, None] = field(default_factory=dict)  # outside the log, in order
    timer_pending: bool = False
    # The txid lists of our last Inventories to it, which a request may repeat exactly.
    sent: deque[list[bytes]] = field(default_factory=lambda: deque(maxlen=RECENT_INVENTORIES))


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
        # The announcement log: _log[i] is at position _log_start + i. It keeps what
        # some peer has not read yet; _logged maps a transaction to its position.
        self._log: list[bytes] = []
        self._log_start = 0
        self._logged: dict[bytes, int] = {}  # kept while in the log or in the mempool
        self._repeat_at = -1  # the latest position of a transaction logged twice
        # Every entry from _pooled_from on entered the mempool (and the log) while its
        # removal count was _pooled_removals: while it still is, they are all there.
        self._pooled_from = 0
        self._pooled_removals = 0
        # Requests answered in full from an Inventory's list, by the list's identity:
        # (the list, the mempool's removal count then, the Transactions sent). Inbound
        # peers that tell us nothing get the same Inventory on the shared timer and ask
        # for exactly it; they all get the same answer, built and encoded once.
        self._served: OrderedDict[int, tuple[list[bytes], int, list[Transactions]]] = OrderedDict()

    # --- peers ----------------------------------------------------------------------

    def peer_connected(self, peer: PeerId, outbound: bool, now: float) -> list[Action]:
        end = self._log_start + len(self._log)
        state = self._peers[peer] = _TxPeer(
            outbound,
            RollingSet(MAX_KNOWN_TXS_PER_PEER),
            TokenBucket(UNSOLICITED_PER_SECOND, UNSOLICITED_BURST, now),
            TokenBucket(STALLS_PER_SECOND, STALL_BURST, now),
            end,
            end,
        )
        self.tracker.add_peer(peer, preferred=outbound)
        ours = [txid for txid in self._unbroadcast if txid in self.mempool]
        if not ours:
            return []
        state.extra.update(dict.fromkeys(ours))
        return self._arm(peer, state, now)

    def peer_disconnected(self, peer: PeerId, now: float) -> list[Action]:
        if self._peers.pop(peer, None) is None:
            return []
        self.tracker.remove_peer(peer)
        self._trim_log()
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
        self.tracker.received(None, txids)
        for state in self._peers.values():
            known = state.known
            for txid in txids:
                known.discard(txid)
        logged, start = self._logged, self._log_start
        for txid in txids:  # those still in the log stay: how a repeat is noticed
            if logged.get(txid, start) < start:
                del logged[txid]

    def block_disconnected(self, height: int) -> None:
        self.confirmed.block_disconnected(height)

    # --- incoming -------------------------------------------------------------------

    def on_inventory(self, peer: PeerId, txids: list[bytes], now: float) -> list[Action]:
        state = self._peers.get(peer)
        if state is None:
            return []  # a block-relay-only link carries no transaction inventory
        state.known.update(txids)
        if self._unbroadcast:
            for txid in txids:
                self._unbroadcast.discard(txid)
        in_pool, confirmed, rejects = self.mempool.has, self.confirmed.has, self.recent_rejects
        wanted = [t for t in txids if not (in_pool(t) or confirmed(t) or t in rejects)]
        self.tracker.announced_many(peer, wanted, now)  # past the cap: ignored, as Bitcoin
        return self._requests(now)

    def on_get_data(self, peer: PeerId, txids: list[bytes]) -> list[Action]:
        state = self._peers.get(peer)
        if self._unbroadcast:
            for txid in txids:
                self._unbroadcast.discard(txid)
        for sent in state.sent if state is not None else ():
            if txids == sent:  # exactly an Inventory we sent it: all announced to it
                served = self._answer(sent)
                if served is not None:
                    return [Send(peer, message) for message in served]
                break
        if state is None:
            knows = [False] * len(txids)
        else:
            known, logged, joined, read = state.known, self._logged, state.joined, state.read
            knows = [t in known or joined <= logged.get(t, -1) < read for t in txids]
        found = self.mempool.transactions([t for t, k in zip(txids, knows) if k])
        actions: list[Action] = [
            Send(peer, Transactions(found[i : i + MAX_TXS_PER_MESSAGE]))
            for i in range(0, len(found), MAX_TXS_PER_MESSAGE)
        ]
        if len(found) < len(txids):
            has = self.mempool.has
            missing = [t for t, k in zip(txids, knows) if not k or not has(t)]
            actions.append(Send(peer, NotFound(InvKind.TRANSACTION, missing)))
        return actions

    def _answer(self, announced: list[bytes]) -> list[Transactions] | None:
        """The answer to a request for exactly the list we announced, if all of it is
        still in the mempool (else None: the general path says what is missing)."""
        removals, cache = self.mempool.removals, self._served
        served = cache.get(id(announced))
        if served is not None and served[0] is announced and served[1] == removals:
            return served[2]
        found = self.mempool.transactions(announced)
        if len(found) < len(announced):
            return None
        messages = [
            Transactions(found[i : i + MAX_TXS_PER_MESSAGE])
            for i in range(0, len(found), MAX_TXS_PER_MESSAGE)
        ]
        cache[id(announced)] = (announced, removals, messages)  # held: the id stays its
        if len(cache) > RECENT_INVENTORIES:
            cache.popitem(last=False)
        return messages

    def on_not_found(self, peer: PeerId, txids: list[bytes], now: float) -> list[Action]:
        for txid in txids:
            self.tracker.not_found(peer, txid)
        self.tracker.capacity_freed(peer)
        return self._requests(now)

    def delivered(self, peer: PeerId, txids: list[bytes], now: float) -> list[Action]:
        """Transactions arrived from `peer` (one message): stop wanting them; charge the
        peer for those nobody asked it for."""
        unsolicited = self.tracker.received(peer, txids)
        state = self._peers.get(peer)
        if state is None:
            return []
        state.known.update(txids)
        actions: list[Action] = []
        for _ in range(unsolicited):
            if not state.unsolicited.take(now):
                actions += self.punish(
                    peer, Offence.UNREQUESTED_DATA, now, "unsolicited transactions"
                )
        return actions

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
        """Announce a new mempool transaction to every peer but its source that lacks it."""
        return self.announce_many([txid], source, now)

    def announce_many(self, txids: list[bytes], source: PeerId | None, now: float) -> list[Action]:
        """`announce` for new mempool transactions from one source (a `Transactions`
        message): appended to the log, and a timer for each peer that lacks one of them
        and has none running."""
        peers = self._peers
        if source is None:
            self._unbroadcast.update(txids)
        elif (origin := peers.get(source)) is not None:
            origin.known.update(txids)  # never announced back to where it came from
        log, logged, start = self._log, self._logged, self._log_start
        if self.mempool.removals != self._pooled_removals:
            self._pooled_removals = self.mempool.removals
            self._pooled_from = start + len(log)
        for txid in txids:
            at = start + len(log)
            if logged.get(txid, -1) >= start:
                self._repeat_at = at  # back in the mempool while still in the log
            logged[txid] = at
            log.append(txid)
        end = start + len(log)
        actions: list[Action] = []
        for peer, state in peers.items():
            if state.timer_pending:
                continue  # its flush will reach these
            if state.known.issuperset(txids):
                state.read = end  # nothing new for it: peers with no timer keep up
            else:
                actions += self._arm(peer, state, now)
        self._trim_log()
        if len(logged) > 2 * len(self.mempool) + LOG_INDEX_SLACK:
            self._prune_index()
        return actions

    def _arm(self, peer: PeerId, state: _TxPeer, now: float) -> list[Action]:
        """The timer that sends the peer what waits for it."""
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
            shared: dict[int, tuple[list[bytes], list[Inventory]]] = {}
            for peer, state in self._peers.items():
                if not state.outbound and state.timer_pending:
                    actions += self._flush(peer, state, shared)
            self._trim_log()
            return actions
        if timer.startswith(OUTBOUND_TRICKLE_PREFIX):
            peer = timer[len(OUTBOUND_TRICKLE_PREFIX) :]
            outbound = self._peers.get(peer)
            if outbound is None:
                return []
            actions = self._flush(peer, outbound)
            self._trim_log()
            return actions
        return None

    def _flush(
        self,
        peer: PeerId,
        state: _TxPeer,
        shared: dict[int, tuple[list[bytes], list[Inventory]]] | None = None,
    ) -> list[Action]:
        """Send the peer what the log gained since its last Inventory. Peers flushed
        together from one read position (inbound ones, on their shared timer) share the
        walk of the log, and those that told us nothing share the messages too."""
        state.timer_pending = False
        log, start, begin = self._log, self._log_start, state.read
        state.read = start + len(log)
        known, has = state.known, self.mempool.has
        if not known and not state.extra and begin > self._repeat_at:
            common = shared.get(begin) if shared is not None else None
            if common is None:
                txids = self._pooled(begin)
                common = (txids, self._inventories(txids))
                if shared is not None:
                    shared[begin] = common
            state.sent.append(common[0])
            return [Send(peer, message) for message in common[1]]
        txids = []
        if state.extra:
            extra, state.extra = state.extra, {}
            txids = [txid for txid in extra if txid not in known and has(txid)]
            known.update(txids)  # announced outside the log: it may ask for them
        txids += [txid for txid in self._pooled(begin) if txid not in known]
        if self._repeat_at >= begin:
            txids = list(dict.fromkeys(txids))
        state.sent.append(txids)
        return [Send(peer, message) for message in self._inventories(txids)]

    def _pooled(self, begin: int) -> list[bytes]:
        """The log from position `begin` on, less what left the mempool since; entries
        logged since the mempool's last removal are known to be there, unlooked-up."""
        log, start, has = self._log, self._log_start, self.mempool.has
        if self.mempool.removals != self._pooled_removals:
            return [txid for txid in log[begin - start :] if has(txid)]
        middle = max(self._pooled_from, begin) - start
        if middle == begin - start:
            return log[middle:]
        return [txid for txid in log[begin - start : middle] if has(txid)] + log[middle:]

    @staticmethod
    def _inventories(txids: list[bytes]) -> list[Inventory]:
        if len(txids) <= MAX_INV_ENTRIES:
            return [Inventory(InvKind.TRANSACTION, txids)] if txids else []
        return [
            Inventory(InvKind.TRANSACTION, txids[i : i + MAX_INV_ENTRIES])
            for i in range(0, len(txids), MAX_INV_ENTRIES)
        ]

    def _trim_log(self) -> None:
        """Drop the head of the log that every peer has read (in bulk, amortised)."""
        log = self._log
        end = self._log_start + len(log)
        oldest = min((s.read for s in self._peers.values() if s.timer_pending), default=end)
        done = oldest - self._log_start
        if done and (done == len(log) or 2 * done >= len(log)):
            del log[:done]
            self._log_start = oldest

    def _prune_index(self) -> None:
        """Forget the positions of transactions out of both the log and the mempool."""
        start, has = self._log_start, self.mempool.has
        self._logged = {t: at for t, at in self._logged.items() if at >= start or has(t)}

    # --- introspection --------------------------------------------------------------

    def queued(self, peer: PeerId) -> int:
        """Log entries and extras waiting for the peer's next flush (some may be dropped
        then, as known to it or gone from the mempool)."""
        state = self._peers.get(peer)
        if state is None:
            return 0
        return len(state.extra) + self._log_start + len(self._log) - state.read

    def known_by(self, peer: PeerId, txid: bytes) -> bool:
        """The peer told us it has the transaction, or our announcements covered it."""
        state = self._peers.get(peer)
        if state is None:
            return False
        return txid in state.known or state.joined <= self._logged.get(txid, -1) < state.read

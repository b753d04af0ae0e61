"""Which announced transactions to request, from whom, and when to ask someone else.

After Bitcoin Core's TxRequestTracker (txrequest.h), simplified. Every announcement is
remembered (per peer, bounded); a wanted transaction is requested from one announcer at
a time; a request that times out or is answered NotFound moves on to the next
announcer; a peer that disconnects hands its requests on. Outbound peers are preferred:
an announcement from an inbound peer becomes requestable only after a delay, so an
attacker with many inbound connections cannot make itself the one we ask (and then
stall us). Pure: time arrives as `now`.

Requests to a peer are kept in the order made, with their deadlines: all requests time
out after the same interval, so a peer's oldest request is its first to expire and no
per-request timer entry is needed (a clock that steps back only delays timeouts by the
step). The heap holds only announcements waiting for their announcer's turn.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable

import msgspec

from meshchain.core.events import PeerId

# Bitcoin's GETDATA_TX_INTERVAL: how long a requested transaction may take to arrive.
TX_REQUEST_TIMEOUT = 60.0
# Bitcoin's NONPREF_PEER_TX_DELAY: an inbound announcer waits this long for its turn.
NONPREFERRED_PEER_DELAY = 2.0
# Bitcoin's MAX_PEER_TX_ANNOUNCEMENTS: announcements remembered per peer; more are ignored.
MAX_PEER_ANNOUNCEMENTS = 5_000
# Bitcoin's MAX_PEER_TX_REQUEST_IN_FLIGHT: requests outstanding to one peer at a time.
MAX_PEER_IN_FLIGHT = 100
# Ours: the wake-up heap is rebuilt when stale entries outnumber live ones this much.
HEAP_SLACK_FACTOR = 4

_NEVER = float("inf")


class _Wanted(msgspec.Struct, gc=False):
    """A transaction someone announced and we do not have yet. A struct made in C, one
    per announced transaction; untracked by the garbage collector (no cycle can pass
    through it: its dict holds peer names and times)."""

    announcers: dict[PeerId, float]  # peer -> may ask from
    requested_from: PeerId | None = None
    expires: float = 0.0


class TxRequestTracker:
    def __init__(self) -> None:
        self._wanted: dict[bytes, _Wanted] = {}
        self._announced: dict[PeerId, set[bytes]] = {}
        # Per peer, what we asked it for: txid -> deadline, oldest first.
        self._in_flight: dict[PeerId, OrderedDict[bytes, float]] = {}
        self._preferred: dict[PeerId, bool] = {}
        self._dirty: dict[bytes, None] = {}  # to (re)consider at the next `requests`
        # Transactions that wait only for room in these peers' in-flight allowance.
        # Ordered dicts: taken from the front, where a plain dict's `next(iter(d))`
        # would scan every slot deleted before it.
        self._blocked: dict[PeerId, OrderedDict[bytes, None]] = {}
        # Peers with room again and transactions blocked on them, for the next `requests`.
        self._freed: dict[PeerId, None] = {}
        self._wakeups: list[tuple[float, bytes]] = []  # announcers' turns, by time
        # No request's deadline is earlier than this (it may be stale, never late).
        self._deadline_check = _NEVER
        # Peers whose requests timed out since the caller last looked (one entry each).
        self.timed_out: list[PeerId] = []

    # --- peers ----------------------------------------------------------------------

    def add_peer(self, peer: PeerId, preferred: bool) -> None:
        self._preferred[peer] = preferred
        self._announced[peer] = set()
        self._in_flight[peer] = OrderedDict()
        self._blocked[peer] = OrderedDict()

    def remove_peer(self, peer: PeerId) -> None:
        """Forget the peer's announcements; what we asked it for goes to someone else."""
        self._preferred.pop(peer, None)
        self._in_flight.pop(peer, None)
        self._blocked.pop(peer, None)
        self._freed.pop(peer, None)
        for txid in self._announced.pop(peer, set()):
            wanted = self._wanted.get(txid)
            if wanted is None:
                continue
            del wanted.announcers[peer]
            if wanted.requested_from == peer:
                wanted.requested_from = None
            self._dirty[txid] = None

    # --- what happens to a transaction ----------------------------------------------

    def announced(self, peer: PeerId, txid: bytes, now: float) -> bool:
        """Remember that `peer` has `txid`; False if the peer is over its allowance."""
        return self.announced_many(peer, (txid,), now) == 1

    def announced_many(self, peer: PeerId, txids: Iterable[bytes], now: float) -> int:
        """`announced` for one Inventory's worth, in one call (relay's hot path): how
        many of `txids` the peer's allowance took; the rest are ignored."""
        announced = self._announced.get(peer)
        if announced is None:
            return 0
        preferred = self._preferred[peer]
        ready = now if preferred else now + NONPREFERRED_PEER_DELAY
        wanted_by_id, dirty = self._wanted, self._dirty
        in_flight, blocked = self._in_flight[peer], self._blocked[peer]
        taken = 0
        for txid in txids:
            if txid in announced:
                taken += 1
                continue
            if len(announced) >= MAX_PEER_ANNOUNCEMENTS:
                continue
            announced.add(txid)
            taken += 1
            wanted = wanted_by_id.get(txid)
            if wanted is None:
                wanted_by_id[txid] = _Wanted({peer: ready})
                if preferred and len(in_flight) >= MAX_PEER_IN_FLIGHT:
                    blocked[txid] = None  # what `_consider` would decide, without the call
                else:
                    dirty[txid] = None
                continue
            wanted.announcers[peer] = ready
            if wanted.requested_from is None:
                dirty[txid] = None
        return taken

    def requested_from(self, txid: bytes) -> PeerId | None:
        wanted = self._wanted.get(txid)
        return None if wanted is None else wanted.requested_from

    def is_announcer(self, peer: PeerId, txid: bytes) -> bool:
        wanted = self._wanted.get(txid)
        return wanted is not None and peer in wanted.announcers

    def forget(self, txid: bytes) -> None:
        """We have the transaction (or know it is invalid): stop wanting it."""
        self.received(None, (txid,))

    def received(self, peer: PeerId | None, txids: Iterable[bytes]) -> int:
        """`forget` for transactions that arrived from `peer` (one message's worth), in
        one call: how many of them `peer` had not announced (unsolicited)."""
        wanted_by_id, announced, blocked = self._wanted, self._announced, self._blocked
        in_flight, dirty = self._in_flight, self._dirty
        unsolicited = 0
        for txid in txids:
            wanted = wanted_by_id.pop(txid, None)
            if wanted is None:
                unsolicited += 1
                continue
            announcers = wanted.announcers
            if peer not in announcers:
                unsolicited += 1
            for announcer in announcers:
                announced[announcer].discard(txid)
                blocked[announcer].pop(txid, None)
            if wanted.requested_from is not None:
                in_flight[wanted.requested_from].pop(txid, None)
            dirty.pop(txid, None)
        return unsolicited

    def not_found(self, peer: PeerId, txid: bytes) -> None:
        """The peer we asked does not have it after all: ask the next announcer."""
        wanted = self._wanted.get(txid)
        if wanted is None or wanted.requested_from != peer:
            return
        self._drop_announcer(txid, wanted, peer)
        self._dirty[txid] = None

    def _drop_announcer(self, txid: bytes, wanted: _Wanted, peer: PeerId) -> None:
        wanted.announcers.pop(peer, None)
        self._announced[peer].discard(txid)
        if wanted.requested_from == peer:
            self._in_flight[peer].pop(txid, None)
            wanted.requested_from = None

    # --- deciding what to ask for ----------------------------------------------------

    def requests(self, now: float) -> dict[PeerId, list[bytes]]:
        """The GetData to send now, per peer: new announcements, timed-out requests
        moved on, delayed announcers whose turn came."""
        wakeups = self._wakeups
        while wakeups and wakeups[0][0] <= now:
            _, txid = heapq.heappop(wakeups)
            self._dirty[txid] = None
        if now >= self._deadline_check:
            self._expire(now)
        dirty, self._dirty = self._dirty, {}
        out: dict[PeerId, list[bytes]] = {}
        wanted_by_id, consider = self._wanted, self._consider
        for txid in dirty:
            wanted = wanted_by_id.get(txid)
            if wanted is not None:
                consider(txid, wanted, now, out)
        if self._freed:
            self._unblock(now, out)
        if len(wakeups) > HEAP_SLACK_FACTOR * len(self._wanted) + 1024:
            self._rebuild_wakeups()
        return out

    def _expire(self, now: float) -> None:
        """Requests past their deadline are reconsidered (`_consider` moves them on);
        the earliest deadline left becomes the next time to look."""
        dirty = self._dirty
        earliest = _NEVER
        for in_flight in self._in_flight.values():
            for txid, deadline in in_flight.items():
                if deadline > now:
                    earliest = min(earliest, deadline)
                    break
                dirty[txid] = None
        self._deadline_check = earliest

    def _consider(
        self, txid: bytes, wanted: _Wanted, now: float, out: dict[PeerId, list[bytes]]
    ) -> None:
        asked = wanted.requested_from
        if asked is not None:
            if now < wanted.expires:
                return
            self._drop_announcer(txid, wanted, asked)  # timed out: its turn is over
            self.timed_out.append(asked)
        announcers = wanted.announcers
        if not announcers:
            del self._wanted[txid]
            return
        # The best ready announcer with room: preferred (outbound) first, then the
        # earliest ready; ties go to the first announcer. Runs for every announcement.
        in_flight, preferred = self._in_flight, self._preferred
        best: PeerId | None = None
        best_preferred, best_ready = False, 0.0
        soonest = _NEVER
        busy: list[PeerId] | None = None
        for peer, ready in announcers.items():
            if ready > now:
                soonest = min(soonest, ready)
                continue
            if len(in_flight[peer]) >= MAX_PEER_IN_FLIGHT:
                if busy is None:
                    busy = []
                busy.append(peer)
                continue
            is_preferred = preferred[peer]
            if (
                best is None
                or (is_preferred and not best_preferred)
                or (is_preferred == best_preferred and ready < best_ready)
            ):
                best, best_preferred, best_ready = peer, is_preferred, ready
        if best is None:
            for peer in busy or ():  # reconsidered when one of its requests completes
                self._blocked[peer][txid] = None
            if soonest != _NEVER:
                heapq.heappush(self._wakeups, (soonest, txid))
            return
        wanted.requested_from = best
        wanted.expires = expires = now + TX_REQUEST_TIMEOUT
        in_flight[best][txid] = expires
        if expires < self._deadline_check:
            self._deadline_check = expires
        asked_of = out.get(best)
        if asked_of is None:
            out[best] = [txid]
        else:
            asked_of.append(txid)

    def capacity_freed(self, peer: PeerId) -> None:
        """A peer answered: what waited for its in-flight room may be asked for now."""
        blocked = self._blocked.get(peer)
        if not blocked or len(self._in_flight[peer]) >= MAX_PEER_IN_FLIGHT:
            return
        self._freed[peer] = None

    def _unblock(self, now: float, out: dict[PeerId, list[bytes]]) -> None:
        """Consider what waited for the freed peers, oldest first, only while a peer has
        room: the rest would just be blocked again. Releasing the whole backlog on every
        answer made each delivery of 100 cost thousands of reconsiderations. A released
        transaction may go to a better announcer instead; the loop then goes on, so a
        peer is never left idle with transactions blocked on it."""
        freed, self._freed = self._freed, {}
        wanted_by_id, consider = self._wanted, self._consider
        expires = now + TX_REQUEST_TIMEOUT
        self._deadline_check = min(self._deadline_check, expires)
        for peer in freed:
            blocked, in_flight = self._blocked.get(peer), self._in_flight.get(peer)
            while blocked and in_flight is not None and len(in_flight) < MAX_PEER_IN_FLIGHT:
                txid, _ = blocked.popitem(last=False)
                wanted = wanted_by_id.get(txid)
                if wanted is None:
                    continue
                if wanted.requested_from is None and len(wanted.announcers) == 1:
                    # Its only announcer is this peer, ready (it was blocked on it) and
                    # with room: what `_consider` would decide, without the call.
                    wanted.requested_from, wanted.expires = peer, expires
                    in_flight[txid] = expires
                    asked_of = out.get(peer)
                    if asked_of is None:
                        out[peer] = asked_of = []
                    asked_of.append(txid)
                else:
                    consider(txid, wanted, now, out)

    def next_wakeup(self) -> float | None:
        """When `requests` has something to do without new input (None: never)."""
        if self._dirty or self._freed:
            return 0.0
        soonest = min(self._wakeups[0][0] if self._wakeups else _NEVER, self._deadline_check)
        return None if soonest == _NEVER else soonest

    def _rebuild_wakeups(self) -> None:
        entries: list[tuple[float, bytes]] = []
        for txid, wanted in self._wanted.items():
            if wanted.requested_from is None and wanted.announcers:
                entries.append((min(wanted.announcers.values()), txid))
        heapq.heapify(entries)
        self._wakeups = entries

    # --- introspection (metrics, tests) ----------------------------------------------

    def in_flight(self, peer: PeerId) -> int:
        return len(self._in_flight.get(peer, ()))

    def announcements(self, peer: PeerId) -> int:
        return len(self._announced.get(peer, ()))

    def __len__(self) -> int:
        return len(self._wanted)

"""Which announced transactions to request, from whom, and when to ask someone else.

After Bitcoin Core's TxRequestTracker (txrequest.h), simplified. Every announcement is
remembered (per peer, bounded); a wanted transaction is requested from one announcer at
a time; a request that times out or is answered NotFound moves on to the next
announcer; a peer that disconnects hands its requests on. Outbound peers are preferred:
an announcement from an inbound peer becomes requestable only after a delay, so an
attacker with many inbound connections cannot make itself the one we ask (and then
stall us). Pure: time arrives as `now`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

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


@dataclass(slots=True)
class _Wanted:
    """A transaction someone announced and we do not have yet."""

    announcers: dict[PeerId, float] = field(default_factory=dict)  # peer -> may ask from
    requested_from: PeerId | None = None
    expires: float = 0.0


class TxRequestTracker:
    def __init__(self) -> None:
        self._wanted: dict[bytes, _Wanted] = {}
        self._announced: dict[PeerId, set[bytes]] = {}
        self._in_flight: dict[PeerId, set[bytes]] = {}
        self._preferred: dict[PeerId, bool] = {}
        self._dirty: dict[bytes, None] = {}  # to (re)consider at the next `requests`
        # Transactions that wait only for room in these peers' in-flight allowance.
        self._blocked: dict[PeerId, dict[bytes, None]] = {}
        # Peers with room again and transactions blocked on them, for the next `requests`.
        self._freed: dict[PeerId, None] = {}
        self._wakeups: list[tuple[float, bytes]] = []
        # Peers whose requests timed out since the caller last looked (one entry each).
        self.timed_out: list[PeerId] = []

    # --- peers ----------------------------------------------------------------------

    def add_peer(self, peer: PeerId, preferred: bool) -> None:
        self._preferred[peer] = preferred
        self._announced[peer] = set()
        self._in_flight[peer] = set()
        self._blocked[peer] = {}

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
        announced = self._announced.get(peer)
        if announced is None or txid in announced:
            return True
        if len(announced) >= MAX_PEER_ANNOUNCEMENTS:
            return False
        announced.add(txid)
        wanted = self._wanted.get(txid)
        if wanted is None:
            wanted = self._wanted[txid] = _Wanted()
        ready = now if self._preferred[peer] else now + NONPREFERRED_PEER_DELAY
        wanted.announcers[peer] = ready
        if wanted.requested_from is None:
            self._dirty[txid] = None
        return True

    def requested_from(self, txid: bytes) -> PeerId | None:
        wanted = self._wanted.get(txid)
        return None if wanted is None else wanted.requested_from

    def is_announcer(self, peer: PeerId, txid: bytes) -> bool:
        wanted = self._wanted.get(txid)
        return wanted is not None and peer in wanted.announcers

    def forget(self, txid: bytes) -> None:
        """We have the transaction (or know it is invalid): stop wanting it."""
        wanted = self._wanted.pop(txid, None)
        if wanted is None:
            return
        for peer in wanted.announcers:
            self._announced[peer].discard(txid)
            self._blocked[peer].pop(txid, None)
        if wanted.requested_from is not None:
            self._in_flight[wanted.requested_from].discard(txid)
        self._dirty.pop(txid, None)

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
            self._in_flight[peer].discard(txid)
            wanted.requested_from = None

    # --- deciding what to ask for ----------------------------------------------------

    def requests(self, now: float) -> dict[PeerId, list[bytes]]:
        """The GetData to send now, per peer: new announcements, timed-out requests
        moved on, delayed announcers whose turn came."""
        wakeups = self._wakeups
        while wakeups and wakeups[0][0] <= now:
            _, txid = heapq.heappop(wakeups)
            self._dirty[txid] = None
        dirty, self._dirty = self._dirty, {}
        out: dict[PeerId, list[bytes]] = {}
        for txid in dirty:
            wanted = self._wanted.get(txid)
            if wanted is not None:
                self._consider(txid, wanted, now, out)
        if self._freed:
            self._unblock(now, out)
        if len(wakeups) > HEAP_SLACK_FACTOR * len(self._wanted) + 1024:
            self._rebuild_wakeups()
        return out

    def _consider(
        self, txid: bytes, wanted: _Wanted, now: float, out: dict[PeerId, list[bytes]]
    ) -> None:
        asked = wanted.requested_from
        if asked is not None:
            if now < wanted.expires:
                return
            self._drop_announcer(txid, wanted, asked)  # timed out: its turn is over
            self.timed_out.append(asked)
        if not wanted.announcers:
            del self._wanted[txid]
            return
        best: PeerId | None = None
        best_key = (True, 0.0)
        soonest = float("inf")
        busy: list[PeerId] = []
        for peer, ready in wanted.announcers.items():
            if ready > now:
                soonest = min(soonest, ready)
                continue
            if len(self._in_flight[peer]) >= MAX_PEER_IN_FLIGHT:
                busy.append(peer)
                continue
            key = (not self._preferred[peer], ready)
            if best is None or key < best_key:
                best, best_key = peer, key
        if best is None:
            for peer in busy:  # reconsidered when one of its requests completes
                self._blocked[peer][txid] = None
            if soonest != float("inf"):
                heapq.heappush(self._wakeups, (soonest, txid))
            return
        wanted.requested_from = best
        wanted.expires = now + TX_REQUEST_TIMEOUT
        self._in_flight[best].add(txid)
        heapq.heappush(self._wakeups, (wanted.expires, txid))
        out.setdefault(best, []).append(txid)

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
        for peer in freed:
            blocked, in_flight = self._blocked.get(peer), self._in_flight.get(peer)
            while blocked and in_flight is not None and len(in_flight) < MAX_PEER_IN_FLIGHT:
                txid = next(iter(blocked))
                del blocked[txid]
                wanted = self._wanted.get(txid)
                if wanted is not None:
                    self._consider(txid, wanted, now, out)

    def next_wakeup(self) -> float | None:
        """When `requests` has something to do without new input (None: never)."""
        if self._dirty or self._freed:
            return 0.0
        return self._wakeups[0][0] if self._wakeups else None

    def _rebuild_wakeups(self) -> None:
        entries: list[tuple[float, bytes]] = []
        for txid, wanted in self._wanted.items():
            if wanted.requested_from is not None:
                entries.append((wanted.expires, txid))
            elif wanted.announcers:
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

"""Peer exchange: GetAddr and Addr, self-advertisement and address relay.

Bitcoin's rules, which keep the exchange useful to honest nodes and cheap to bound:
- we ask only outbound peers (GetAddr once per connection) and answer only inbound ones,
  once, from a cached sample, so a peer cannot map our book by asking again and again;
- addresses a peer sends pass through its token bucket (0.1 a second, 1,000 deep, plus
  1,000 when we asked it for some); the rest are dropped and counted;
- a node announces its own listen address to the peers it dials, and small unsolicited
  `Addr` messages of fresh addresses are forwarded to two peers picked by a keyed hash
  of the address, so a new node becomes known across the network within seconds;
- block-relay-only and feeler connections carry no addresses at all.
In consortium and private chains only members' addresses are stored, relayed or dialled.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshchain.core.events import Action, ConnectionKind, PeerId, Send
from meshchain.core.peers.address import NetAddress
from meshchain.core.peers.bans import Offence
from meshchain.core.peers.limits import TokenBucket
from meshchain.core.wire.messages import MAX_ADDR_PER_MESSAGE, Addr, AddrEntry, GetAddr

if TYPE_CHECKING:
    from meshchain.core.peers.manager import PeerManager, PeerRecord

ADDR_RATE = 0.1  # Bitcoin MAX_ADDR_RATE_PER_SECOND
ADDR_BUCKET = float(MAX_ADDR_PER_MESSAGE)  # Bitcoin MAX_ADDR_PROCESSING_TOKEN_BUCKET
ADDR_TIME_PENALTY = 2 * 3600.0  # Bitcoin: relayed addresses are taken as 2 hours older
MAX_ADDR_TO_RELAY = 10  # Bitcoin relays only Addr messages of at most 10 addresses
ADDR_RELAY_FANOUT = 2  # ...each address to 2 peers
ADDR_FRESH_AGE = 600.0  # ...if it was seen in the last 10 minutes
GETADDR_CACHE_LIFETIME = 24 * 3600.0  # Bitcoin caches its GetAddr answer for ~24 h
GETADDR_MAX_PERCENT = 23  # Bitcoin MAX_PCT_ADDR_TO_SEND
# Ours: a sample taken while the book was young (the node had just started: a new
# network's seeds are asked first, with near-empty books) is taken again once the book
# has grown this many times over, by at least GETADDR_CACHE_MIN_GROWTH entries; else
# the seeds would hand out nothing for a day. Growth by a factor bounds how often a peer
# that feeds us addresses can make us resample.
GETADDR_CACHE_REGROWTH = 2
GETADDR_CACHE_MIN_GROWTH = 10
# Beyond these a peer is punished (the offence table says how): it keeps sending what
# its bucket drops, or addresses no node could use.
ADDR_FLOOD_LIMIT = 10 * MAX_ADDR_PER_MESSAGE
BAD_ADDR_LIMIT = MAX_ADDR_PER_MESSAGE
GETADDR_REPEAT_LIMIT = 10  # GetAddr after the answered one, before it counts as spam
# Ours: a node with nothing left to dial asks its peers again this often, and a GetAddr
# that comes at least this long after the previous one is not counted as a repeat.
REASK_INTERVAL = 30.0
RELAY_KEY_EPOCH = 24 * 3600.0  # Bitcoin re-picks relay targets for an address daily
# Addresses each peer is known to have (it sent them, or we did): never sent to it again.
# Bitcoin's m_addr_known, a rolling filter of 5,000; here the oldest are forgotten first.
MAX_KNOWN_ADDRESSES = 5000


@dataclass(slots=True)
class AddrPeerState:
    bucket: TokenBucket
    asked: bool = False  # we sent GetAddr and wait for the answer
    asked_at: float | None = None  # when we last sent GetAddr on this connection
    answered: int = -1  # the version of our sample we last answered it from; -1: never
    last_request: float | None = None  # when it last sent us GetAddr
    repeats: int = 0  # GetAddr after that
    dropped: int = 0  # addresses over the rate limit
    bad: int = 0  # unusable or absurdly timestamped addresses
    known: dict[NetAddress, None] = field(default_factory=dict)  # insertion-ordered set

    def learn(self, address: NetAddress) -> bool:
        """Note that the peer has this address; False if it was noted already."""
        known = self.known
        if address in known:
            return False
        if len(known) >= MAX_KNOWN_ADDRESSES:
            del known[next(iter(known))]
        known[address] = None
        return True


class AddressExchange:
    def __init__(self, manager: PeerManager) -> None:
        self._manager = manager
        self._peers: dict[PeerId, AddrPeerState] = {}
        self._cache: list[AddrEntry] = []
        self._cache_expires = 0.0
        self._cache_book_size = 0
        self._cache_version = 0
        self._answered_block_relay: set[PeerId] = set()  # the book's size when the sample was taken
        self._relay_key = manager.rng.randbytes(32)

    def own_entry(self, now: float) -> AddrEntry | None:
        listen = self._manager.config.listen
        if listen is None:
            return None
        return AddrEntry(
            listen, self._manager.config.node_id, self._manager.config.services, int(now)
        )

    @staticmethod
    def entries_for(addresses: tuple[NetAddress, ...], now: float) -> list[AddrEntry]:
        return [AddrEntry(address, b"", 0, int(now)) for address in addresses]

    # --- connection events ------------------------------------------------------------

    def on_connected(self, record: PeerRecord, now: float) -> list[Action]:
        if record.kind in (ConnectionKind.BLOCK_RELAY, ConnectionKind.FEELER):
            return []
        state = AddrPeerState(TokenBucket(ADDR_RATE, ADDR_BUCKET, now, initial=1.0))
        self._peers[record.peer] = state
        self.heard_of(record, now)
        if record.kind is ConnectionKind.INBOUND:
            return []
        state.asked, state.asked_at = True, now
        state.bucket.add(ADDR_BUCKET)
        actions: list[Action] = [Send(record.peer, GetAddr())]
        own = self.own_entry(now)
        if own is not None:
            state.learn(own.address)
            actions.append(Send(record.peer, Addr([own])))
        return actions

    def heard_of(self, record: PeerRecord, now: float) -> None:
        """Keep the address a peer says it listens on: as fresh as an address gets. Also
        for an inbound peer turned away for want of room: we may dial it later, or tell
        others of it, where it would otherwise stay unknown (a newcomer that only knows
        seeds whose slots are full)."""
        manager, listen = self._manager, record.listen
        if listen is None or not self._wanted(record.node_id) or not self._allowed(listen, now):
            return
        manager.book.add([AddrEntry(listen, record.node_id, 0, int(now))], record.address, now)
        if manager.config.members is not None:
            manager.add_persistent(listen, record.node_id)

    def on_disconnected(self, peer: PeerId) -> None:
        self._peers.pop(peer, None)
        self._answered_block_relay.discard(peer)

    def _answer_over_block_relay(self, peer: PeerId, now: float) -> list[Action]:
        """A block-relay-only link we dialled carries no gossip, but its other end does not
        know that: if that node asks (it has nothing left to dial, and we may be all it
        has), it gets the shared sample once. We never ask, announce or relay on it."""
        if peer in self._answered_block_relay:
            return []
        self._answered_block_relay.add(peer)
        sample = self._shareable_sample(now)
        return [Send(peer, Addr(sample))] if sample else []

    def _shareable_sample(self, now: float) -> list[AddrEntry]:
        """The cached GetAddr sample without addresses discouraged since it was taken."""
        return [e for e in self._sample(now) if self._allowed(e.address, now)]

    # --- messages ---------------------------------------------------------------------

    def on_get_addr(self, peer: PeerId, now: float) -> list[Action]:
        record, state = self._manager.peers.get(peer), self._peers.get(peer)
        if record is not None and state is None and record.kind is ConnectionKind.BLOCK_RELAY:
            return self._answer_over_block_relay(peer, now)
        if record is None or state is None:
            return []
        # Bitcoin answers inbound peers only, against fingerprinting by the peers it chose.
        # Here everyone gets the same cached sample, which defeats that already, and a
        # node whose known addresses are all connected to it can only learn more from
        # the peers that dialled it (see `ask_for_more`).
        previous, state.last_request = state.last_request, now
        sample = self._shareable_sample(now)
        if state.answered == self._cache_version:  # nothing new to tell it
            if previous is not None and now - previous < REASK_INTERVAL:
                state.repeats += 1
                if state.repeats > GETADDR_REPEAT_LIMIT:
                    return self._manager.punish(peer, Offence.GETADDR_SPAM, now, "GetAddr spam")
            return []
        state.answered = self._cache_version
        # What it told us or we told it already is left out (Bitcoin's PushAddress).
        return [Send(peer, Addr([e for e in sample if state.learn(e.address)]))]

    def ask_for_more(self, now: float) -> list[Action]:
        """Our book has nothing left to dial: ask every peer not asked in the last
        REASK_INTERVAL, inbound ones too (a node dialled by everyone it knows is stuck
        else); a peer answers again once its sample has changed."""
        actions: list[Action] = []
        for peer, state in self._peers.items():
            if state.asked_at is None or now - state.asked_at >= REASK_INTERVAL:
                state.asked, state.asked_at = True, now
                state.bucket.add(ADDR_BUCKET)
                actions.append(Send(peer, GetAddr()))
        return actions

    def on_addr(self, peer: PeerId, message: Addr, now: float) -> list[Action]:
        manager = self._manager
        record, state = manager.peers.get(peer), self._peers.get(peer)
        if record is None or state is None:
            return []
        entries = message.entries
        admitted: list[AddrEntry] = []
        for entry in entries:
            if state.bucket.take(now):
                state.learn(entry.address)
                admitted.append(entry)
            else:
                state.dropped += 1
        # Discouraged and banned IPs are neither stored nor passed on (bans.py).
        wanted = [e for e in admitted if self._wanted(e.node_id) and self._allowed(e.address, now)]
        result = manager.book.add(wanted, record.address, now, ADDR_TIME_PENALTY)
        state.bad += result.unusable + result.bad_time
        if manager.config.members is not None:
            for entry in wanted:
                manager.add_persistent(entry.address, entry.node_id)
        if state.dropped > ADDR_FLOOD_LIMIT:
            return manager.punish(peer, Offence.ADDR_FLOOD, now, f"{state.dropped} over limit")
        if state.bad > BAD_ADDR_LIMIT:
            return manager.punish(peer, Offence.BAD_ADDRESSES, now, f"{state.bad} unusable")
        if state.asked and len(entries) > MAX_ADDR_TO_RELAY:
            state.asked = False  # the answer to our GetAddr: stored, not relayed
            return []
        if len(entries) > MAX_ADDR_TO_RELAY:
            return []
        # Unlike Bitcoin (m_getaddr_sent), a small answer to our GetAddr is relayed like
        # gossip: a small network's books are small, and the answerer's own fresh entry in
        # it is how its address reaches nodes that did not dial it.
        return self._relay(peer, wanted, now)

    # --- helpers ----------------------------------------------------------------------

    def _wanted(self, node_id: bytes) -> bool:
        members = self._manager.config.members
        return members is None or node_id in members

    def _allowed(self, address: NetAddress, now: float) -> bool:
        """Not the address of a discouraged or banned IP: those we neither dial nor gossip."""
        return not self._manager.bans.is_discouraged(address.ip, now)

    def _sample(self, now: float) -> list[AddrEntry]:
        """The cached answer to GetAddr: the same sample for a day (Bitcoin's cache), or
        until the book has outgrown the one it was taken from."""
        book = self._manager.book
        grown = len(book) >= max(
            GETADDR_CACHE_REGROWTH * self._cache_book_size,
            self._cache_book_size + GETADDR_CACHE_MIN_GROWTH,
        )
        if now >= self._cache_expires or grown:
            self._cache_book_size = len(book)
            self._cache_version += 1
            sample = book.get_addr(now, MAX_ADDR_PER_MESSAGE, GETADDR_MAX_PERCENT)
            own = self.own_entry(now)
            if own is not None and len(sample) < MAX_ADDR_PER_MESSAGE:
                sample.append(own)
            self._cache = [e for e in sample if self._wanted(e.node_id)]
            self._cache_expires = now + GETADDR_CACHE_LIFETIME
        return self._cache

    def _relay(self, source: PeerId, entries: list[AddrEntry], now: float) -> list[Action]:
        """Forward fresh addresses to two full-relay peers chosen by a keyed hash."""
        manager = self._manager
        peers = self._peers
        records = manager.peers
        # Only connections that carry addresses, and not one we are hanging up on.
        targets = [p for p in peers if p != source and not _closing(records.get(p))]
        if not targets:
            return []
        batches: dict[PeerId, list[AddrEntry]] = {}
        epoch = int(now // RELAY_KEY_EPOCH).to_bytes(8, "big")
        named = [(peer, peer.encode()) for peer in targets]
        for entry in entries:
            if not 0 <= now - entry.seen <= ADDR_FRESH_AGE:
                continue
            if not manager.config.groups.is_usable(entry.address):
                continue
            seed = self._relay_key + epoch + entry.address.ip + entry.address.port.to_bytes(2)
            ranked = heapq.nsmallest(
                ADDR_RELAY_FANOUT,
                named,
                key=lambda named_peer: hashlib.blake2b(
                    seed + named_peer[1], digest_size=8
                ).digest(),
            )
            for peer, _ in ranked:
                if peers[peer].learn(entry.address):
                    batches.setdefault(peer, []).append(entry)
        return [Send(peer, Addr(batch)) for peer, batch in batches.items()]


def _closing(record: PeerRecord | None) -> bool:
    return record is None or record.closing

"""The peer manager: which peers a node talks to, how many, and what they may cost it.

Sans-IO like the rest of the core: `Node` hands it connection events, address messages
and timer ticks, and it answers with actions (`Dial`, `Send`, `Disconnect`, timers).
It keeps Bitcoin Core's shape: an address book fed by peer exchange, outbound slots
filled from the book (one per address group, some block-relay-only), feelers that test
new addresses, inbound slots guarded by eviction, per-peer rate limits and one offence
table that turns misbehaviour into disconnection, discouragement or a ban. Consortium
and private chains dial only their members, always, with backoff.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meshchain.core.chain.genesis import MAX_MEMBERS
from meshchain.core.events import (
    Action,
    ConnectionKind,
    Dial,
    Disconnect,
    PeerId,
    PeerPunished,
    ScheduleTimer,
)
from meshchain.core.peers.addrbook import AddressBook
from meshchain.core.peers.address import NetAddress
from meshchain.core.peers.addrex import AddressExchange
from meshchain.core.peers.bans import BanList, Offence, PenaltyAction
from meshchain.core.peers.config import PeerConfig
from meshchain.core.peers.eviction import EvictionCandidate, select_peer_to_evict
from meshchain.core.peers.limits import PeerLimiter
from meshchain.core.peers.persistence import PeerStateStore
from meshchain.core.store import ChainStore
from meshchain.core.wire.messages import Message

DIAL_TIMER = "peers-dial"
FEELER_TIMER = "peers-feeler"
SAVE_TIMER = "peers-save"
DIAL_INTERVAL = 0.5  # Bitcoin's ThreadOpenConnections loop sleeps 500 ms
IDLE_DIAL_INTERVAL = 5.0  # with every slot full, look again this often
FEELER_INTERVAL = 120.0  # Bitcoin FEELER_INTERVAL: 2 minutes (Poisson)
SAVE_INTERVAL = 15 * 60.0  # Bitcoin DUMP_PEERS_INTERVAL: 15 minutes
MAX_PENDING_DIALS = 8  # outbound connection attempts in flight at once
# A dial the driver never answered (neither PeerConnected nor DialFailed) frees its slot
# after this long: the runtime's connect (10 s) and handshake (20 s) timeouts, doubled.
PENDING_DIAL_TIMEOUT = 60.0
SELECT_TRIES = 100  # Bitcoin gives up on a selection round after 100 tries
# Do not dial an address again within this time unless nothing else is left (Bitcoin
# skips addresses tried in the last 10 minutes for the first 30 tries).
REDIAL_GAP = 600.0
REDIAL_GAP_TRIES = 30
# ...and never within this time: an address that evicted us must not be hammered (ours).
MIN_REDIAL_GAP = 20.0
PERSISTENT_RETRY_INITIAL = 1.0  # persistent peers: doubling from 1 s...
PERSISTENT_RETRY_MAX = 60.0  # ...to one minute, with jitter
# Addresses we learn about from the peers themselves are as fresh as it gets; those a
# peer relays for others get Bitcoin's two-hour time penalty (in AddressExchange).
DISCONNECT_FEELER = "feeler: address tested"
# Messages dropped over a peer's rate limits before it is punished: an honest peer's
# burst allowance covers its spikes, so one that keeps hitting the limit means it.
RATE_LIMIT_STRIKES = 100
# Persistent peers: configured ones plus consortium members learned from the network.
MAX_PERSISTENT = MAX_MEMBERS


@dataclass(slots=True)
class PeerRecord:
    """What the manager knows about one open connection."""

    peer: PeerId
    kind: ConnectionKind
    node_id: bytes
    address: NetAddress | None
    listen: NetAddress | None
    group: bytes
    connected_at: float
    limiter: PeerLimiter
    min_ping: float | None = None
    last_tx_time: float = 0.0
    last_block_time: float = 0.0
    dialled: NetAddress | None = None  # the book entry this outbound connection came from
    over_limit: int = 0  # messages dropped by the rate limits
    # We sent Disconnect and wait for the driver's PeerDisconnected: the connection no
    # longer counts for slots or eviction, and what it still sends is dropped.
    closing: bool = False

    @property
    def outbound(self) -> bool:
        return self.kind is not ConnectionKind.INBOUND

    @property
    def relays_transactions(self) -> bool:
        return self.kind not in (ConnectionKind.BLOCK_RELAY, ConnectionKind.FEELER)


@dataclass(slots=True)
class PersistentState:
    node_id: bytes | None  # the identity the Dial demands, if configured or announced
    retry_at: float = 0.0
    backoff: float = PERSISTENT_RETRY_INITIAL
    peer: PeerId | None = None  # connected as (either direction)
    # The identity found there when we connected without demanding one: it tells us the
    # peer is already connected when it dials us, without binding later dials to it.
    seen_id: bytes = b""

    def is_node(self, node_id: bytes) -> bool:
        return bool(node_id) and node_id in (self.node_id, self.seen_id)


@dataclass(slots=True)
class PendingDial:
    kind: ConnectionKind
    since: float


@dataclass(slots=True)
class PeerCounters:
    """For metrics and the report: what the manager did."""

    dials: int = 0
    dial_failures: int = 0
    evictions: int = 0
    refused_inbound: int = 0
    rate_limited: dict[str, int] = field(default_factory=dict)
    punished: int = 0


class PeerManager:
    """Which peers to dial and keep: slots, the book, feelers, anchors, limits, bans."""

    def __init__(
        self,
        config: PeerConfig,
        store: ChainStore,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.rng = rng
        self._state = PeerStateStore(store)
        self.book: AddressBook = self._state.load_book(config.groups, rng)
        self.bans: BanList = self._state.load_bans()
        self.peers: dict[PeerId, PeerRecord] = {}
        self.counters = PeerCounters()
        self._pending: dict[NetAddress, PendingDial] = {}  # dials in flight
        self._persistent: dict[NetAddress, PersistentState] = {
            p.address: PersistentState(p.node_id) for p in config.persistent
        }
        if config.members is not None and config.discovery:
            # Members never dial from the book, so the seeds are the way in: keep dialling
            # them (the handshake turns away any that is not a member).
            for address in config.bootstrap:
                self._persistent.setdefault(address, PersistentState(None))
        self._anchors: list[NetAddress] = []
        self._recent_dials: dict[NetAddress, float] = {}  # book dials of the last minute
        self._dial_due: float | None = None  # when the DIAL timer is set to fire
        self._eviction_key = rng.randbytes(32)
        self.exchange = AddressExchange(self)

    @property
    def _discovering(self) -> bool:
        """Whether outbound slots are filled from the book (not in member mode)."""
        return self.config.discovery and self.config.members is None

    # --- life cycle -------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        self._anchors = self._state.take_anchors(self.config.groups)
        if self.config.discovery and self.config.bootstrap:
            self.book.add(self.exchange.entries_for(self.config.bootstrap, now), None, now)
        if self.config.members is not None:
            # The members learned last time: the book holds members' addresses only.
            for entry in self.book.get_addr(now, len(self.book), 100):
                if entry.node_id in self.config.members:
                    self.add_persistent(entry.address, entry.node_id)
        actions: list[Action] = [ScheduleTimer(SAVE_TIMER, now + SAVE_INTERVAL)]
        if self._discovering:
            actions.append(ScheduleTimer(FEELER_TIMER, now + self._poisson(FEELER_INTERVAL)))
        return actions + self._dial_round(now)

    def stop(self) -> None:
        """Keep the book, the bans and the block-relay-only peers (anchors) for next time."""
        anchors = [
            r.dialled
            for r in self._live()
            if r.kind is ConnectionKind.BLOCK_RELAY and r.dialled is not None
        ]
        self._state.save(self.book, self.bans, anchors)

    def timer(self, name: str, now: float) -> list[Action] | None:
        """Handle one of our timers; None when the name is not ours."""
        if name == DIAL_TIMER:
            return self._dial_round(now)
        if name == FEELER_TIMER:
            return self._feeler(now)
        if name == SAVE_TIMER:
            self.bans.sweep(now)
            self._state.save(self.book, self.bans, None)
            return [ScheduleTimer(SAVE_TIMER, now + SAVE_INTERVAL)]
        return None

    # --- connections ------------------------------------------------------------------

    def accepts_inbound(self, address: NetAddress, now: float) -> bool:
        """Asked by the driver before the handshake: is this IP banned?"""
        return not self.bans.is_banned(address.ip, now)

    def connected(
        self,
        peer: PeerId,
        kind: ConnectionKind,
        node_id: bytes,
        address: NetAddress | None,
        listen: NetAddress | None,
        now: float,
    ) -> list[Action]:
        if address is not None:
            self._pending.pop(address, None)
        group = self.config.groups.group(address) if address is not None else b""
        record = PeerRecord(
            peer, kind, node_id, address, listen, group, now, PeerLimiter(now), dialled=None
        )
        actions: list[Action] = []
        if kind is ConnectionKind.INBOUND:
            refusal = self._inbound_refusal(record, now)
            if refusal is None and not self._make_room(now, actions):
                refusal = "inbound slots are full"
                self.exchange.heard_of(record, now)
            if refusal is not None:
                self.counters.refused_inbound += 1
                return [Disconnect(peer, refusal)]  # never registered: nothing to undo
        else:
            record.dialled = address
            if address is not None:
                self.book.good(address, now, node_id or None)
        self.peers[peer] = record
        if kind is ConnectionKind.FEELER:
            return [*actions, self._close(record, DISCONNECT_FEELER)]
        self._claim_persistent(record)
        actions.extend(self.exchange.on_connected(record, now))
        return actions

    def disconnected(self, peer: PeerId, now: float) -> list[Action]:
        record = self.peers.pop(peer, None)
        if record is None:
            return []
        self.exchange.on_disconnected(peer)
        lost_persistent = False
        for state in self._persistent.values():
            if state.peer == peer:
                state.peer = None
                self._back_off(state, now)
                lost_persistent = True
        # An inbound peer leaving frees no outbound slot: no reason to dial sooner.
        if record.outbound or lost_persistent:
            return self._schedule_dial(now)
        return []

    def dial_failed(self, address: NetAddress, now: float) -> list[Action]:
        self._pending.pop(address, None)
        self.counters.dial_failures += 1
        state = self._persistent.get(address)
        if state is not None and state.peer is None:
            self._back_off(state, now)
        return self._schedule_dial(now)

    def _close(self, record: PeerRecord, reason: str) -> Disconnect:
        """Hang up on a peer: from now on it holds no slot and is no eviction candidate."""
        record.closing = True
        return Disconnect(record.peer, reason)

    def _live(self) -> list[PeerRecord]:
        """Connections we are not hanging up on."""
        return [r for r in self.peers.values() if not r.closing]

    def _claim_persistent(self, record: PeerRecord) -> None:
        """A persistent peer is connected (we dialled it, or it dialled us): stop dialling."""
        for address, state in self._persistent.items():
            dialled = record.outbound and record.dialled == address
            if state.peer is None and (dialled or state.is_node(record.node_id)):
                state.peer, state.backoff = record.peer, PERSISTENT_RETRY_INITIAL
                if dialled and state.node_id is None:
                    state.seen_id = record.node_id

    def _connection_of(self, node_id: bytes | None) -> PeerId | None:
        """The live connection to the node with this identity, if any."""
        if not node_id:
            return None
        for record in self._live():
            if record.node_id == node_id and record.kind is not ConnectionKind.FEELER:
                return record.peer
        return None

    def _inbound_refusal(self, record: PeerRecord, now: float) -> str | None:
        address = record.address
        if address is None:
            return None
        if self.bans.is_banned(address.ip, now):
            return "banned"
        same_ip = sum(
            1
            for r in self._live()
            if r.kind is ConnectionKind.INBOUND and r.address and r.address.ip == address.ip
        )
        if same_ip >= self.config.max_inbound_per_ip:
            return f"too many connections from {address.ip.hex()}"
        full = self._inbound_count() >= self.config.max_inbound
        if full and self.bans.is_discouraged(address.ip, now):
            return "discouraged, and inbound slots are full"
        return None

    def _make_room(self, now: float, actions: list[Action]) -> bool:
        """Evict an inbound peer if the slots are full; False if none may be evicted."""
        if self._inbound_count() < self.config.max_inbound:
            return True
        inbound = {r.peer: r for r in self._live() if r.kind is ConnectionKind.INBOUND}
        victim = select_peer_to_evict(
            [self._candidate(r, now) for r in inbound.values()], self._eviction_key
        )
        if victim is None:
            return False
        self.counters.evictions += 1
        actions.append(self._close(inbound[victim], "evicted: inbound slots are full"))
        return True

    def _candidate(self, record: PeerRecord, now: float) -> EvictionCandidate:
        members = self.config.members
        ip = record.address.ip if record.address is not None else b""
        persistent = any(s.peer == record.peer for s in self._persistent.values())
        return EvictionCandidate(
            peer=record.peer,
            group=record.group,
            connected_at=record.connected_at,
            min_ping=record.min_ping,
            last_tx_time=record.last_tx_time,
            last_block_time=record.last_block_time,
            relays_transactions=record.relays_transactions,
            block_relay_only=record.kind is ConnectionKind.BLOCK_RELAY,
            protected=persistent
            or (members is not None and record.node_id in members)
            or now - record.connected_at < self.config.eviction_grace,
            discouraged=self.bans.is_discouraged(ip, now),
        )

    def _inbound_count(self) -> int:
        return sum(1 for r in self._live() if r.kind is ConnectionKind.INBOUND)

    # --- what peers do ----------------------------------------------------------------

    def over_limit(self, peer: PeerId, message: Message, now: float) -> list[Action] | None:
        """None if the message is within the peer's rate limits; otherwise it is dropped
        (and counted), and a peer that keeps going gets the offence table's penalty.
        Whatever a peer we are hanging up on still sends is dropped too.

        Addresses are metered one by one by the address exchange, and bandwidth by the
        driver (it stops reading rather than drop what it read).
        """
        record = self.peers.get(peer)
        if record is None:
            return None
        if record.closing:
            return []
        kind = record.limiter.admit_message(type(message), now)
        if kind is None:
            return None
        name = kind.name.lower()
        self.counters.rate_limited[name] = self.counters.rate_limited.get(name, 0) + 1
        record.over_limit += 1
        if record.over_limit >= RATE_LIMIT_STRIKES:
            return self.punish(peer, Offence.RATE_LIMIT_EXCEEDED, now, f"{name} over its limit")
        return []

    def ping_measured(self, peer: PeerId, rtt: float) -> None:
        record = self.peers.get(peer)
        if record is not None and (record.min_ping is None or rtt < record.min_ping):
            record.min_ping = rtt

    def delivered_transaction(self, peer: PeerId, now: float) -> None:
        """A novel transaction came from this peer: eviction protects such peers."""
        record = self.peers.get(peer)
        if record is not None:
            record.last_tx_time = now

    def delivered_block(self, peer: PeerId, now: float) -> None:
        record = self.peers.get(peer)
        if record is not None:
            record.last_block_time = now

    def punish(self, peer: PeerId, offence: Offence, now: float, detail: str) -> list[Action]:
        """Apply the offence table: disconnect, and maybe discourage or ban the IP."""
        record = self.peers.get(peer)
        reason = f"{offence.value}: {detail}"
        if record is None:
            return [Disconnect(peer, reason)]
        self.counters.punished += 1
        members = self.config.members
        if record.address is None or (members is not None and record.node_id in members):
            # Members are operators we know: drop the connection, never ban the node.
            return [self._close(record, reason)]
        penalty = self.bans.punish(record.address.ip, offence, now)
        until = now + penalty.duration if penalty.action is not PenaltyAction.DISCONNECT else None
        return [
            PeerPunished(peer, offence.value, penalty.action.value, until),
            self._close(record, reason),
        ]

    def session_violation(self, address: NetAddress, reason: str, now: float) -> list[Action]:
        """The transport closed a session over bad bytes: charge the IP (no session left
        to close). Only the IP is known when it happens before the hello."""
        self.counters.punished += 1
        offence = _violation_offence(reason)
        penalty = self.bans.punish(address.ip, offence, now)
        until = now + penalty.duration if penalty.action is not PenaltyAction.DISCONNECT else None
        return [PeerPunished(str(address), offence.value, penalty.action.value, until)]

    def ban(self, address: NetAddress, until: float, reason: str) -> list[Action]:
        """A ban by hand (the API's `ban`): the IP's peers go at once."""
        self.bans.ban(address.ip, until, reason)
        return [
            self._close(r, f"banned: {reason}")
            for r in self._live()
            if r.address is not None and r.address.ip == address.ip
        ]

    # --- dialling ---------------------------------------------------------------------

    def _schedule_dial(self, now: float) -> list[Action]:
        """Look for peers to dial soon, but never later than the round already due: a
        stream of failures or disconnections must not keep pushing the round back. (A
        due time already past is stale: that round ran, or its timer was lost.)"""
        at = now + DIAL_INTERVAL
        if self._dial_due is not None and now <= self._dial_due <= at:
            return []
        self._dial_due = at
        return [ScheduleTimer(DIAL_TIMER, at)]

    def _dial_round(self, now: float) -> list[Action]:
        self._expire_pending(now)
        actions = self._dial_persistent(now)
        if self._discovering:
            actions.extend(self._dial_outbound(now))
        delay = IDLE_DIAL_INTERVAL
        if self._discovering and self._outbound_short():
            delay = DIAL_INTERVAL
        waits = [
            state.retry_at - now
            for address, state in self._persistent.items()
            if state.peer is None and not self.bans.is_banned(address.ip, now)
        ]
        if waits:  # the next persistent peer due, but not sooner than a round from now
            delay = min(delay, max(DIAL_INTERVAL, min(waits)))
        self._dial_due = now + delay
        actions.append(ScheduleTimer(DIAL_TIMER, self._dial_due))
        return actions

    def _expire_pending(self, now: float) -> None:
        for address, pending in list(self._pending.items()):
            if now - pending.since >= PENDING_DIAL_TIMEOUT:
                del self._pending[address]

    def _dial_persistent(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for address, state in self._persistent.items():
            if state.peer is not None or address in self._pending or now < state.retry_at:
                continue
            if self.bans.is_banned(address.ip, now):
                continue  # a ban by hand outranks the configuration
            if len(self._pending) >= MAX_PENDING_DIALS:
                break
            actions.append(self._dial(address, ConnectionKind.PERSISTENT, state.node_id, now))
            state.retry_at = now + state.backoff  # in case neither answer ever comes
        return actions

    def _outbound_short(self) -> bool:
        full, block = self._outbound_counts()
        return full < self.config.outbound_full_relay or block < self.config.block_relay_only

    def _outbound_counts(self) -> tuple[int, int]:
        kinds = [r.kind for r in self._live()] + [p.kind for p in self._pending.values()]
        return kinds.count(ConnectionKind.FULL_RELAY), kinds.count(ConnectionKind.BLOCK_RELAY)

    def _dial_outbound(self, now: float) -> list[Action]:
        """Fill the outbound slots from the book: anchors first, one peer per group."""
        actions: list[Action] = []
        full, block = self._outbound_counts()
        while self._anchors and block < self.config.block_relay_only:
            if len(self._pending) >= MAX_PENDING_DIALS:
                break
            address = self._anchors.pop()
            if self._dialable(address, now, set()):
                actions.append(self._dial(address, ConnectionKind.BLOCK_RELAY, None, now))
                block += 1
        groups = self._outbound_groups()
        recent = self._recent_dials
        for stale in [a for a, at in recent.items() if now >= at + MIN_REDIAL_GAP]:
            del recent[stale]
        for tries in range(SELECT_TRIES):
            want_full = full < self.config.outbound_full_relay
            if not want_full and block >= self.config.block_relay_only:
                break
            if len(self._pending) >= MAX_PENDING_DIALS:
                break
            info = self.book.select(now)
            if info is None:
                break
            address = info.address
            if not self._dialable(address, now, groups):
                continue
            if now < self._recent_dials.get(address, now - MIN_REDIAL_GAP) + MIN_REDIAL_GAP:
                continue
            if tries < REDIAL_GAP_TRIES and now - info.last_try < REDIAL_GAP:
                continue
            kind = ConnectionKind.FULL_RELAY if want_full else ConnectionKind.BLOCK_RELAY
            recent[address] = now
            actions.append(self._dial(address, kind, info.node_id or None, now))
            groups.add(self.config.groups.group(address))
            full, block = (full + 1, block) if want_full else (full, block + 1)
        if not actions and self._outbound_short() and not self._pending:
            actions = self.exchange.ask_for_more(now)  # nothing left to dial in the book
        return actions

    def _feeler(self, now: float) -> list[Action]:
        """Test an address (a tried-table collision first): connect, mark good, hang up."""
        actions: list[Action] = [ScheduleTimer(FEELER_TIMER, now + self._poisson(FEELER_INTERVAL))]
        self._expire_pending(now)
        self.book.resolve_collisions(now)
        if self._outbound_short() or len(self._pending) >= MAX_PENDING_DIALS:
            return actions
        info = self.book.select_tried_collision() or self.book.select(now, new_only=True)
        if info is not None and self._dialable(info.address, now, self._outbound_groups()):
            actions.append(
                self._dial(info.address, ConnectionKind.FEELER, info.node_id or None, now)
            )
        return actions

    def _dialable(self, address: NetAddress, now: float, groups: set[bytes]) -> bool:
        if address in self._pending or address == self.config.listen:
            return False
        if self.bans.is_banned(address.ip, now) or self.bans.is_discouraged(address.ip, now):
            return False
        if self.config.groups.group(address) in groups:
            return False
        return not any(r.dialled == address or r.listen == address for r in self.peers.values())

    def _outbound_groups(self) -> set[bytes]:
        groups = {r.group for r in self._live() if r.outbound}
        groups.update(self.config.groups.group(a) for a in self._pending)
        return groups

    def _dial(
        self, address: NetAddress, kind: ConnectionKind, node_id: bytes | None, now: float
    ) -> Dial:
        self._pending[address] = PendingDial(kind, now)
        self.counters.dials += 1
        if address in self.book:
            self.book.attempt(address, now, count_failure=kind is not ConnectionKind.FEELER)
        return Dial(address, kind, node_id)

    def _back_off(self, state: PersistentState, now: float) -> None:
        """Retry after the current backoff, jittered by +-50% but never past the cap."""
        delay = min(PERSISTENT_RETRY_MAX, state.backoff * (0.5 + self.rng.random()))
        state.retry_at = now + delay
        state.backoff = min(state.backoff * 2, PERSISTENT_RETRY_MAX)

    def add_persistent(self, address: NetAddress, node_id: bytes | None) -> bool:
        """A member's address learned from the network: stay connected to it too."""
        if address in self._persistent or address == self.config.listen:
            return False
        if not self.config.groups.is_usable(address):
            return False  # e.g. a Hello that says it listens on 0.0.0.0
        if node_id == self.config.node_id or len(self._persistent) >= MAX_PERSISTENT:
            return False
        state = PersistentState(node_id)
        state.peer = self._connection_of(node_id)  # it may be connected already
        self._persistent[address] = state
        return True

    def _poisson(self, mean: float) -> float:
        return self.rng.expovariate(1.0 / mean)


def _violation_offence(reason: str) -> Offence:
    """The offence-table entry for a transport failure, from the session's reason."""
    if "exceeds" in reason:
        return Offence.OVERSIZED_MESSAGE
    if "undecodable" in reason or "non-canonical" in reason:
        return Offence.MALFORMED_MESSAGE
    return Offence.PROTOCOL_VIOLATION

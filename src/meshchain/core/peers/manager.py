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
from meshchain.core.peers.limits import MessageClass, PeerLimiter, message_class
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
SELECT_TRIES = 100  # Bitcoin gives up on a selection round after 100 tries
# Do not dial an address again within this time unless nothing else is left (Bitcoin
# skips addresses tried in the last 10 minutes for the first 30 tries).
REDIAL_GAP = 600.0
REDIAL_GAP_TRIES = 30
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

    @property
    def outbound(self) -> bool:
        return self.kind is not ConnectionKind.INBOUND

    @property
    def relays_transactions(self) -> bool:
        return self.kind not in (ConnectionKind.BLOCK_RELAY, ConnectionKind.FEELER)


@dataclass(slots=True)
class PersistentState:
    node_id: bytes | None
    retry_at: float = 0.0
    backoff: float = PERSISTENT_RETRY_INITIAL
    peer: PeerId | None = None  # connected as


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
        self._pending: dict[NetAddress, ConnectionKind] = {}  # dials in flight
        self._persistent: dict[NetAddress, PersistentState] = {
            p.address: PersistentState(p.node_id) for p in config.persistent
        }
        self._anchors: list[NetAddress] = []
        self._eviction_key = rng.randbytes(32)
        self.exchange = AddressExchange(self)

    # --- life cycle -------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        self._anchors = self._state.take_anchors()
        if self.config.discovery and self.config.bootstrap:
            self.book.add(self.exchange.entries_for(self.config.bootstrap, now), None, now)
        actions: list[Action] = [ScheduleTimer(SAVE_TIMER, now + SAVE_INTERVAL)]
        if self.config.discovery and self.config.members is None:
            actions.append(ScheduleTimer(FEELER_TIMER, now + self._poisson(FEELER_INTERVAL)))
        return actions + self._dial_round(now)

    def stop(self) -> None:
        """Keep the book, the bans and the block-relay-only peers (anchors) for next time."""
        anchors = [
            r.dialled
            for r in self.peers.values()
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
        if kind is ConnectionKind.INBOUND:
            refusal = self._inbound_refusal(record, now)
            if refusal is not None:
                self.counters.refused_inbound += 1
                return [Disconnect(peer, refusal)]
            actions = self._make_room_for(record, now)
        else:
            record.dialled = address
            actions = []
            if address is not None:
                self.book.good(address, now)
                persistent = self._persistent.get(address)
                if persistent is not None:
                    persistent.peer, persistent.backoff = peer, PERSISTENT_RETRY_INITIAL
        self.peers[peer] = record
        for state in self._persistent.values():
            if state.peer is None and node_id and state.node_id == node_id:
                state.peer = peer  # it dialled us first: one connection is enough
        if kind is ConnectionKind.FEELER:
            return [*actions, Disconnect(peer, DISCONNECT_FEELER)]
        actions.extend(self.exchange.on_connected(record, now))
        return actions

    def disconnected(self, peer: PeerId, now: float) -> list[Action]:
        record = self.peers.pop(peer, None)
        if record is None:
            return []
        self.exchange.on_disconnected(peer)
        for state in self._persistent.values():
            if state.peer == peer:
                state.peer = None
                self._back_off(state, now)
        return self._schedule_dial(now)

    def dial_failed(self, address: NetAddress, now: float) -> list[Action]:
        self._pending.pop(address, None)
        self.counters.dial_failures += 1
        state = self._persistent.get(address)
        if state is not None:
            self._back_off(state, now)
        return self._schedule_dial(now)

    def _inbound_refusal(self, record: PeerRecord, now: float) -> str | None:
        address = record.address
        if address is None:
            return None
        if self.bans.is_banned(address.ip, now):
            return "banned"
        same_ip = sum(
            1
            for r in self.peers.values()
            if r.kind is ConnectionKind.INBOUND and r.address and r.address.ip == address.ip
        )
        if same_ip >= self.config.max_inbound_per_ip:
            return f"too many connections from {address.ip.hex()}"
        full = self._inbound_count() >= self.config.max_inbound
        if full and self.bans.is_discouraged(address.ip, now):
            return "discouraged, and inbound slots are full"
        return None

    def _make_room_for(self, newcomer: PeerRecord, now: float) -> list[Action]:
        if self._inbound_count() < self.config.max_inbound:
            return []
        victim = select_peer_to_evict(
            [self._candidate(r, now) for r in self.peers.values() if not r.outbound],
            self._eviction_key,
        )
        if victim is None:
            self.counters.refused_inbound += 1
            return [Disconnect(newcomer.peer, "inbound slots are full")]
        self.counters.evictions += 1
        return [Disconnect(victim, "evicted: inbound slots are full")]

    def _candidate(self, record: PeerRecord, now: float) -> EvictionCandidate:
        members = self.config.members
        ip = record.address.ip if record.address is not None else b""
        return EvictionCandidate(
            peer=record.peer,
            group=record.group,
            connected_at=record.connected_at,
            min_ping=record.min_ping,
            last_tx_time=record.last_tx_time,
            last_block_time=record.last_block_time,
            relays_transactions=record.relays_transactions,
            block_relay_only=record.kind is ConnectionKind.BLOCK_RELAY,
            protected=members is not None and record.node_id in members,
            discouraged=self.bans.is_discouraged(ip, now),
        )

    def _inbound_count(self) -> int:
        return sum(1 for r in self.peers.values() if r.kind is ConnectionKind.INBOUND)

    # --- what peers do ----------------------------------------------------------------

    def over_limit(self, peer: PeerId, message: Message, now: float) -> list[Action] | None:
        """None if the message is within the peer's rate limits; otherwise it is dropped
        (and counted), and a peer that keeps going gets the offence table's penalty.

        Addresses are metered one by one by the address exchange, and bandwidth by the
        driver (it stops reading rather than drop what it read).
        """
        record = self.peers.get(peer)
        kind = message_class(message)
        if record is None or kind is MessageClass.ADDR_ENTRY or record.limiter.admit(kind, now):
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
        self.counters.punished += 1
        member = (
            record is not None
            and self.config.members is not None
            and record.node_id in self.config.members
        )
        if record is None or record.address is None or member:
            # Members are operators we know: drop the connection, never ban the node.
            return [Disconnect(peer, f"{offence.value}: {detail}")]
        penalty = self.bans.punish(record.address.ip, offence, now)
        until = now + penalty.duration if penalty.action is not PenaltyAction.DISCONNECT else None
        return [
            PeerPunished(peer, offence.value, penalty.action.value, until),
            Disconnect(peer, f"{offence.value}: {detail}"),
        ]

    def ban(self, address: NetAddress, until: float, reason: str) -> list[Action]:
        """A ban by hand (the API's `ban`): the IP's peers go at once."""
        self.bans.ban(address.ip, until, reason)
        return [
            Disconnect(r.peer, f"banned: {reason}")
            for r in self.peers.values()
            if r.address is not None and r.address.ip == address.ip
        ]

    # --- dialling ---------------------------------------------------------------------

    def _schedule_dial(self, now: float) -> list[Action]:
        return [ScheduleTimer(DIAL_TIMER, now + DIAL_INTERVAL)]

    def _dial_round(self, now: float) -> list[Action]:
        actions = self._dial_persistent(now)
        if self.config.discovery and self.config.members is None:
            actions.extend(self._dial_outbound(now))
        short = self._outbound_short() or any(s.peer is None for s in self._persistent.values())
        delay = DIAL_INTERVAL if short else IDLE_DIAL_INTERVAL
        actions.append(ScheduleTimer(DIAL_TIMER, now + delay))
        return actions

    def _dial_persistent(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for address, state in self._persistent.items():
            if state.peer is not None or address in self._pending or now < state.retry_at:
                continue
            if len(self._pending) >= MAX_PENDING_DIALS:
                break
            actions.append(self._dial(address, ConnectionKind.PERSISTENT, state.node_id, now))
            state.retry_at = now + state.backoff  # in case neither answer ever comes
        return actions

    def _outbound_short(self) -> bool:
        full, block = self._outbound_counts()
        return full < self.config.outbound_full_relay or block < self.config.block_relay_only

    def _outbound_counts(self) -> tuple[int, int]:
        kinds = [r.kind for r in self.peers.values()] + list(self._pending.values())
        return kinds.count(ConnectionKind.FULL_RELAY), kinds.count(ConnectionKind.BLOCK_RELAY)

    def _dial_outbound(self, now: float) -> list[Action]:
        """Fill the outbound slots from the book: anchors first, one peer per group."""
        actions: list[Action] = []
        full, block = self._outbound_counts()
        while self._anchors and block < self.config.block_relay_only:
            address = self._anchors.pop()
            if self._dialable(address, now, set()):
                actions.append(self._dial(address, ConnectionKind.BLOCK_RELAY, None, now))
                block += 1
        groups = self._outbound_groups()
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
            if tries < REDIAL_GAP_TRIES and now - info.last_try < REDIAL_GAP:
                continue
            kind = ConnectionKind.FULL_RELAY if want_full else ConnectionKind.BLOCK_RELAY
            actions.append(self._dial(address, kind, info.node_id or None, now))
            groups.add(self.config.groups.group(address))
            full, block = (full + 1, block) if want_full else (full, block + 1)
        return actions

    def _feeler(self, now: float) -> list[Action]:
        """Test an address (a tried-table collision first): connect, mark good, hang up."""
        actions: list[Action] = [ScheduleTimer(FEELER_TIMER, now + self._poisson(FEELER_INTERVAL))]
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
        groups = {r.group for r in self.peers.values() if r.outbound}
        groups.update(self.config.groups.group(a) for a in self._pending)
        return groups

    def _dial(
        self, address: NetAddress, kind: ConnectionKind, node_id: bytes | None, now: float
    ) -> Dial:
        self._pending[address] = kind
        self.counters.dials += 1
        if address in self.book:
            self.book.attempt(address, now, count_failure=kind is not ConnectionKind.FEELER)
        return Dial(address, kind, node_id)

    def _back_off(self, state: PersistentState, now: float) -> None:
        state.retry_at = now + state.backoff * (0.5 + self.rng.random())
        state.backoff = min(state.backoff * 2, PERSISTENT_RETRY_MAX)

    def add_persistent(self, address: NetAddress, node_id: bytes | None) -> bool:
        """A member's address learned from the network: stay connected to it too."""
        if address in self._persistent or address == self.config.listen:
            return False
        if node_id == self.config.node_id or len(self._persistent) >= MAX_PERSISTENT:
            return False
        self._persistent[address] = PersistentState(node_id)
        return True

    def _poisson(self, mean: float) -> float:
        return self.rng.expovariate(1.0 / mean)

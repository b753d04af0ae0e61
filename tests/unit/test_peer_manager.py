"""The peer manager through `Node.handle`: dialling, slots, feelers, anchors, persistent
peers, inbound admission and eviction, rate limits, punishment and persistence.

The address exchange (GetAddr/Addr) has its own file, test_addr_exchange.py.
"""

from __future__ import annotations

import random
from typing import TypeVar

import msgspec
import pytest

from meshchain.chainkit import ChainKit
from meshchain.core.events import (
    Action,
    ConnectionKind,
    Dial,
    DialFailed,
    Disconnect,
    MessageReceived,
    NodeStarted,
    NodeStopping,
    PeerConnected,
    PeerDisconnected,
    PeerPunished,
    ScheduleTimer,
    Send,
    TimerFired,
    TransactionSubmitted,
)
from meshchain.core.node import PRODUCE_TIMER, Node, NodeConfig
from meshchain.core.peers.address import GroupPolicy, NetAddress
from meshchain.core.peers.bans import Offence
from meshchain.core.peers.config import PeerConfig, PersistentPeer
from meshchain.core.peers.limits import GET_BLOCK_BURST
from meshchain.core.peers.manager import (
    DIAL_INTERVAL,
    DIAL_TIMER,
    DISCONNECT_FEELER,
    FEELER_TIMER,
    IDLE_DIAL_INTERVAL,
    MAX_PENDING_DIALS,
    PENDING_DIAL_TIMEOUT,
    PERSISTENT_RETRY_INITIAL,
    PERSISTENT_RETRY_MAX,
    RATE_LIMIT_STRIKES,
    SAVE_TIMER,
)
from meshchain.core.peers.persistence import ANCHORS_KEY, BANS_KEY, BOOK_KEY
from meshchain.core.relay.config import RelayConfig, RelayMode
from meshchain.core.store import MemoryStore, WriteBatch
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import (
    Addr,
    AddrEntry,
    BlockMessage,
    GetBlock,
    TransactionMessage,
)

KIT = ChainKit(seed=8, accounts=3)
T0 = KIT.genesis.timestamp_ms / 1000
PORT = 9000
GROUPS = GroupPolicy()  # /16 groups: 10.n.0.0/16 is group n
A = TypeVar("A")


def at(group: int, host: int = 1, port: int = PORT) -> NetAddress:
    """An address in group `group` (10.group.0.0/16)."""
    return NetAddress(bytes([10, group, host >> 8, host & 0xFF]), port)


def node_id(n: int) -> bytes:
    return (1000 + n).to_bytes(32, "big")


def of_type(actions: list[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def make_node(
    peers: PeerConfig | None = None,
    store: MemoryStore | None = None,
    validator: bool = False,
    seed: int = 1,
    relay: RelayConfig | None = None,
) -> Node:
    config = NodeConfig(
        KIT.genesis,
        KIT.authority if validator else None,
        peers=peers or PeerConfig(),
        relay=relay or RelayConfig(),
    )
    return Node(config, store or MemoryStore(), random.Random(seed))


def fill_book(node: Node, addresses: list[NetAddress], now: float = T0) -> None:
    entries = [AddrEntry(a, b"", 0, int(now)) for a in addresses]
    node.peer_manager.book.add(entries, None, now)


def spread(groups: int, per_group: int = 1) -> list[NetAddress]:
    """`per_group` addresses in each of `groups` groups."""
    return [at(g, h) for g in range(1, groups + 1) for h in range(1, per_group + 1)]


def answer(node: Node, dial: Dial, peer: str, now: float, identity: bytes = b"") -> list[Action]:
    """The driver's success for a Dial: a session with whatever listens there."""
    event = PeerConnected(peer, True, identity, dial.address, dial.address, dial.kind)
    return node.handle(event, now)


def inbound(
    node: Node, peer: str, address: NetAddress | None, now: float, identity: bytes = b""
) -> list[Action]:
    event = PeerConnected(peer, False, identity, address, None, ConnectionKind.INBOUND)
    return node.handle(event, now)


def dial_timer(actions: list[Action]) -> ScheduleTimer | None:
    timers = [a for a in of_type(actions, ScheduleTimer) if a.timer == DIAL_TIMER]
    return timers[-1] if timers else None


def fill_outbound(node: Node, now: float) -> tuple[float, list[Action]]:
    """Start the node and answer every Dial until no more come; the clock and the last
    round's actions."""
    actions = node.handle(NodeStarted(), now)
    count = 0
    for _ in range(20):
        dials = of_type(actions, Dial)
        if not dials:
            return now, actions
        for dial in dials:
            count += 1
            answer(node, dial, f"out{count}", now, node_id(count))
        now += 1.0
        actions = node.handle(TimerFired(DIAL_TIMER), now)
    raise AssertionError("the node never stopped dialling")


def kinds(node: Node) -> list[ConnectionKind]:
    return list(node.peers.values())


# --- start and dialling -------------------------------------------------------------------


def test_start_adds_the_bootstrap_to_the_book_and_dials_persistent_peers_first() -> None:
    seeds = (at(1), at(2), at(3))
    friend = PersistentPeer(at(50), node_id(50))
    node = make_node(PeerConfig(bootstrap=seeds, persistent=(friend,)))
    dials = of_type(node.handle(NodeStarted(), T0), Dial)
    assert all(seed in node.peer_manager.book for seed in seeds)
    assert friend.address not in node.peer_manager.book  # configured, not gossip
    assert dials[0] == Dial(friend.address, ConnectionKind.PERSISTENT, node_id(50))
    assert {d.address for d in dials[1:]} == set(seeds)
    assert {d.kind for d in dials[1:]} == {ConnectionKind.FULL_RELAY}


def test_never_two_outbound_dials_to_one_group() -> None:
    node = make_node()
    fill_book(node, spread(groups=5, per_group=10))
    dials = of_type(node.handle(NodeStarted(), T0), Dial)
    groups = [GROUPS.group(d.address) for d in dials]
    assert len(dials) == 5
    assert len(set(groups)) == 5
    answer(node, dials[0], "first", T0)
    node.handle(DialFailed(dials[1].address, "refused"), T0 + 1)
    later = of_type(node.handle(TimerFired(DIAL_TIMER), T0 + 2), Dial)
    # Only the group whose dial failed is free again; the connected one is not.
    assert [GROUPS.group(d.address) for d in later] == [groups[1]]


def test_at_most_max_pending_dials_are_in_flight() -> None:
    friends = tuple(PersistentPeer(at(100 + i)) for i in range(5))
    node = make_node(PeerConfig(persistent=friends))
    fill_book(node, spread(groups=40))
    first = of_type(node.handle(NodeStarted(), T0), Dial)
    assert len(first) == MAX_PENDING_DIALS
    assert [d.kind for d in first[:5]] == [ConnectionKind.PERSISTENT] * 5
    assert of_type(node.handle(TimerFired(DIAL_TIMER), T0 + 1), Dial) == []
    node.handle(DialFailed(first[-1].address, "refused"), T0 + 1.5)
    assert len(of_type(node.handle(TimerFired(DIAL_TIMER), T0 + 2), Dial)) == 1


def test_dial_failed_frees_the_slot_and_the_book_records_the_attempt() -> None:
    node = make_node(PeerConfig(outbound_full_relay=1, block_relay_only=0))
    fill_book(node, spread(groups=3))
    (dial,) = of_type(node.handle(NodeStarted(), T0), Dial)
    assert of_type(node.handle(TimerFired(DIAL_TIMER), T0 + 1), Dial) == []  # slot taken
    node.handle(DialFailed(dial.address, "connection refused"), T0 + 2)
    info = node.peer_manager.book.info(dial.address)
    assert info is not None
    assert (info.attempts, info.last_try, info.last_success) == (1, int(T0), 0)
    assert node.peer_manager.counters.dial_failures == 1
    (again,) = of_type(node.handle(TimerFired(DIAL_TIMER), T0 + 3), Dial)
    assert again.address != dial.address  # just tried: another address comes first


def test_the_dial_timer_rearms_quickly_when_short_and_slowly_when_full() -> None:
    node = make_node()
    started = node.handle(NodeStarted(), T0)  # an empty book: short of every peer
    assert dial_timer(started) == ScheduleTimer(DIAL_TIMER, T0 + DIAL_INTERVAL)
    full = make_node()
    fill_book(full, spread(groups=40))
    now, _ = fill_outbound(full, T0)
    actions = full.handle(TimerFired(DIAL_TIMER), now + 1)
    assert of_type(actions, Dial) == []
    assert dial_timer(actions) == ScheduleTimer(DIAL_TIMER, now + 1 + IDLE_DIAL_INTERVAL)


def test_static_topology_does_not_poll_for_outbound_it_never_dials() -> None:
    node = make_node(PeerConfig(discovery=False))
    actions = node.handle(NodeStarted(), T0)
    assert dial_timer(actions) == ScheduleTimer(DIAL_TIMER, T0 + IDLE_DIAL_INTERVAL)


def test_a_stream_of_disconnections_does_not_postpone_the_dial_round() -> None:
    node = make_node()
    due = dial_timer(node.handle(NodeStarted(), T0))
    assert due is not None
    now = T0
    for n in range(10):  # an inbound peer that comes and goes faster than the timer
        now += 0.2
        inbound(node, f"churn{n}", at(60, n + 1, 40_000), now)
        timer = dial_timer(node.handle(PeerDisconnected(f"churn{n}", "bye"), now))
        assert timer is None or timer.at <= due.at
    failing = make_node()
    fill_book(failing, spread(groups=20))
    started = failing.handle(NodeStarted(), T0)
    due = dial_timer(started)
    assert due is not None
    for n, dial in enumerate(of_type(started, Dial)):
        timer = dial_timer(failing.handle(DialFailed(dial.address, "refused"), T0 + 0.05 * n))
        assert timer is None or timer.at <= due.at


def test_an_unanswered_dial_frees_its_slot_after_a_timeout() -> None:
    node = make_node()
    fill_book(node, spread(groups=40))
    assert len(of_type(node.handle(NodeStarted(), T0), Dial)) == MAX_PENDING_DIALS
    assert of_type(node.handle(TimerFired(DIAL_TIMER), T0 + 30), Dial) == []
    later = node.handle(TimerFired(DIAL_TIMER), T0 + PENDING_DIAL_TIMEOUT)
    assert len(of_type(later, Dial)) == MAX_PENDING_DIALS


# --- outbound slots -----------------------------------------------------------------------


def test_outbound_slots_fill_with_8_full_relay_and_2_block_relay_then_stop() -> None:
    node = make_node()
    fill_book(node, spread(groups=40))
    now, _ = fill_outbound(node, T0)
    full = kinds(node).count(ConnectionKind.FULL_RELAY)
    block = kinds(node).count(ConnectionKind.BLOCK_RELAY)
    assert (full, block, len(node.peers)) == (8, 2, 10)
    groups = {r.group for r in node.peer_manager.peers.values()}
    assert len(groups) == 10  # one per group
    for step in range(1, 4):
        assert of_type(node.handle(TimerFired(DIAL_TIMER), now + step), Dial) == []
    assert node.peer_manager.counters.dials == 10


def test_a_block_relay_only_peer_gets_blocks_but_no_transactions_or_addresses() -> None:
    node = make_node(validator=True, relay=RelayConfig(mode=RelayMode.FLOOD))
    node.handle(NodeStarted(), T0)
    answer(node, Dial(at(1), ConnectionKind.FULL_RELAY), "full", T0, node_id(1))
    greeting = answer(node, Dial(at(2), ConnectionKind.BLOCK_RELAY), "block", T0, node_id(2))
    assert of_type(greeting, Send) == []  # no GetAddr, no self-advertisement
    inbound(node, "in", at(3, 1, 40_000), T0)
    assert node._tx_relay_peers == ["full", "in"]
    tx = KIT.transfer(node.chain.chain_id, 0, 1, 5, 500, 0)
    relayed = node.handle(TransactionSubmitted(encode(tx)), T0)
    assert {s.peer for s in of_type(relayed, Send)} == {"full", "in"}
    fresh = Addr([AddrEntry(at(9), node_id(9), 0, int(T0 + 2))])
    gossip = node.handle(MessageReceived("in", fresh, 60), T0 + 2)
    assert [s.peer for s in of_type(gossip, Send)] == ["full"]  # the only other taker
    block = node.handle(TimerFired(PRODUCE_TIMER), T0 + 2)
    sent = [s for s in of_type(block, Send) if isinstance(s.message, BlockMessage)]
    assert {s.peer for s in sent} == {"full", "block", "in"}


# --- feelers ------------------------------------------------------------------------------


def test_feelers_go_out_only_when_the_outbound_slots_are_full() -> None:
    node = make_node()
    fill_book(node, spread(groups=40))
    for n, dial in enumerate(of_type(node.handle(NodeStarted(), T0), Dial)):
        answer(node, dial, f"out{n}", T0)  # 8 full-relay peers, no dial in flight
    early = node.handle(TimerFired(FEELER_TIMER), T0 + 1)  # block-relay slots still free
    assert of_type(early, Dial) == []
    assert [t.timer for t in of_type(early, ScheduleTimer)] == [FEELER_TIMER]
    full = make_node()
    fill_book(full, spread(groups=40))
    now, _ = fill_outbound(full, T0)
    (feeler,) = of_type(full.handle(TimerFired(FEELER_TIMER), now + 1), Dial)
    assert feeler.kind is ConnectionKind.FEELER
    outbound_groups = {r.group for r in full.peer_manager.peers.values()}
    assert GROUPS.group(feeler.address) not in outbound_groups


def test_a_feeler_connection_is_marked_good_then_disconnected() -> None:
    node = make_node()
    fill_book(node, spread(groups=40))
    now, _ = fill_outbound(node, T0)
    (feeler,) = of_type(node.handle(TimerFired(FEELER_TIMER), now + 1), Dial)
    before = node.peer_manager.book.info(feeler.address)
    assert before is not None
    assert not before.in_tried
    actions = answer(node, feeler, "feeler", now + 2, node_id(77))
    assert of_type(actions, Disconnect) == [Disconnect("feeler", DISCONNECT_FEELER)]
    assert of_type(actions, Send) == []
    after = node.peer_manager.book.info(feeler.address)
    assert after is not None
    assert after.last_success == int(now + 2)
    assert after.in_tried
    assert "feeler" not in node.peers  # not a relay peer, not an outbound slot
    node.handle(PeerDisconnected("feeler", DISCONNECT_FEELER), now + 2)
    assert of_type(node.handle(TimerFired(DIAL_TIMER), now + 3), Dial) == []


# --- anchors ------------------------------------------------------------------------------


def test_block_relay_peers_are_anchors_dialled_first_after_a_restart_and_only_once() -> None:
    store = MemoryStore()
    first = make_node(store=store)
    fill_book(first, spread(groups=40))
    fill_outbound(first, T0)
    anchors = {
        r.dialled for r in first.peer_manager.peers.values() if r.kind is ConnectionKind.BLOCK_RELAY
    }
    assert len(anchors) == 2
    first.handle(NodeStopping(), T0 + 10)
    second = make_node(store=store, seed=2)
    dials = of_type(second.handle(NodeStarted(), T0 + 20), Dial)
    assert {d.address for d in dials[:2]} == anchors
    assert {d.kind for d in dials[:2]} == {ConnectionKind.BLOCK_RELAY}
    assert {d.kind for d in dials[2:]} == {ConnectionKind.FULL_RELAY}
    third = make_node(store=store, seed=3)  # the second never stopped: no anchors saved
    dials = of_type(third.handle(NodeStarted(), T0 + 30), Dial)
    assert ConnectionKind.BLOCK_RELAY not in {d.kind for d in dials}


# --- persistent peers ---------------------------------------------------------------------


def _next_dial(
    node: Node, actions: list[Action], now: float, limit: float
) -> tuple[Dial, float, int]:
    """Follow the DIAL timer until a Dial comes out: the Dial, when, and how many dial
    rounds it took."""
    rounds = 0
    while now < limit:
        dials = of_type(actions, Dial)
        if dials:
            return dials[0], now, rounds
        timer = dial_timer(actions)
        assert timer is not None, "the dial timer was not re-armed"
        now = max(now, timer.at)
        actions = node.handle(TimerFired(DIAL_TIMER), now)
        rounds += 1
    raise AssertionError("no dial before the limit")


def test_persistent_peers_are_redialled_with_a_growing_backoff_capped_at_a_minute() -> None:
    friend = PersistentPeer(at(5), node_id(5))
    node = make_node(PeerConfig(persistent=(friend,), discovery=False))
    dial, now, _ = _next_dial(node, node.handle(NodeStarted(), T0), T0, T0 + 1)
    gaps, rounds = [], 0
    for _ in range(12):
        assert dial == Dial(friend.address, ConnectionKind.PERSISTENT, node_id(5))
        failed_at = now + 0.1
        actions = node.handle(DialFailed(dial.address, "refused"), failed_at)
        dial, now, rounds = _next_dial(node, actions, failed_at, failed_at + 200)
        gaps.append(now - failed_at)
    backoff = PERSISTENT_RETRY_INITIAL
    for gap in gaps:
        assert (
            0.5 * backoff - 1e-9 <= gap <= min(1.5 * backoff, PERSISTENT_RETRY_MAX) + DIAL_INTERVAL
        )
        backoff = min(2 * backoff, PERSISTENT_RETRY_MAX)
    assert gaps[-1] >= PERSISTENT_RETRY_MAX / 2  # it did grow to the cap
    # While it waits, the node wakes up every few seconds, not every dial interval.
    assert rounds <= PERSISTENT_RETRY_MAX / IDLE_DIAL_INTERVAL + 2
    # A session resets the backoff; after a disconnection it is redialled within seconds.
    answer(node, dial, "friend", now, node_id(5))
    assert "friend" in node.peers
    lost = node.handle(PeerDisconnected("friend", "reset"), now + 100)
    redial, when, _ = _next_dial(node, lost, now + 100, now + 200)
    assert redial.address == friend.address
    assert when - (now + 100) <= 1.5 * PERSISTENT_RETRY_INITIAL + DIAL_INTERVAL


def test_a_persistent_peer_that_dialled_us_first_is_not_dialled() -> None:
    friend = PersistentPeer(at(5), node_id(5))
    node = make_node(PeerConfig(persistent=(friend,), discovery=False))
    (dial,) = of_type(node.handle(NodeStarted(), T0), Dial)
    inbound(node, "friend-in", at(5, 1, 40_000), T0 + 0.1, node_id(5))
    node.handle(DialFailed(dial.address, "already connected"), T0 + 0.2)
    for step in range(1, 130):
        assert of_type(node.handle(TimerFired(DIAL_TIMER), T0 + step), Dial) == []
    lost = node.handle(PeerDisconnected("friend-in", "bye"), T0 + 200)
    redial, _, _ = _next_dial(node, lost, T0 + 200, T0 + 210)
    assert redial.address == friend.address


def test_a_member_learned_from_its_inbound_connection_is_not_dialled_while_connected() -> None:
    ours, member = node_id(0), node_id(1)
    config = PeerConfig(node_id=ours, listen=at(200), members=frozenset({ours, member}))
    node = make_node(config)
    node.handle(NodeStarted(), T0)
    event = PeerConnected("m", False, member, at(7, 1, 40_000), at(7), ConnectionKind.INBOUND)
    node.handle(event, T0 + 1)
    for step in range(2, 20):
        assert of_type(node.handle(TimerFired(DIAL_TIMER), T0 + step), Dial) == []
    lost = node.handle(PeerDisconnected("m", "bye"), T0 + 30)
    redial, _, _ = _next_dial(node, lost, T0 + 30, T0 + 40)
    assert redial == Dial(at(7), ConnectionKind.PERSISTENT, member)


def test_member_mode_dials_its_seeds_as_it_dials_nothing_from_the_book() -> None:
    ours = node_id(0)
    config = PeerConfig(node_id=ours, bootstrap=(at(3),), members=frozenset({ours}))
    dials = of_type(make_node(config).handle(NodeStarted(), T0), Dial)
    assert dials == [Dial(at(3), ConnectionKind.PERSISTENT, None)]


def test_a_banned_persistent_peer_is_not_redialled() -> None:
    friend = PersistentPeer(at(5), node_id(5))
    node = make_node(PeerConfig(persistent=(friend,), discovery=False))
    (dial,) = of_type(node.handle(NodeStarted(), T0), Dial)
    answer(node, dial, "friend", T0, node_id(5))
    kicked = node.peer_manager.ban(friend.address, T0 + 3600, "by hand")
    assert kicked == [Disconnect("friend", "banned: by hand")]
    node.handle(PeerDisconnected("friend", "banned"), T0 + 1)
    for step in range(2, 100):
        actions = node.handle(TimerFired(DIAL_TIMER), T0 + step)
        assert of_type(actions, Dial) == []
    assert dial_timer(actions) == ScheduleTimer(DIAL_TIMER, T0 + 99 + IDLE_DIAL_INTERVAL)


# --- inbound ------------------------------------------------------------------------------


def test_inbound_connections_from_one_ip_are_capped() -> None:
    node = make_node(PeerConfig(max_inbound_per_ip=2))
    node.handle(NodeStarted(), T0)
    for n in range(2):
        assert of_type(inbound(node, f"p{n}", at(4, 1, 40_000 + n), T0), Disconnect) == []
    refused = inbound(node, "p2", at(4, 1, 40_002), T0)
    assert [d.peer for d in of_type(refused, Disconnect)] == ["p2"]
    assert "p2" not in node.peers
    assert of_type(inbound(node, "other", at(4, 2, 40_000), T0), Disconnect) == []
    assert node.peer_manager.counters.refused_inbound == 1


def _crowd(node: Node, honest: int, crowd: int) -> list[str]:
    """`honest` older inbound peers from distinct groups, then `crowd` younger ones all
    from group 99; the crowd's peer names, oldest first."""
    now = T0
    for n in range(honest):
        now += 1
        inbound(node, f"h{n}", at(n + 1, 1, 40_000), now)
    names = []
    for n in range(crowd):
        now += 1
        inbound(node, f"c{n}", at(99, n + 1, 40_000), now)
        names.append(f"c{n}")
    return names


def test_a_newcomer_to_full_inbound_slots_evicts_from_the_most_represented_group() -> None:
    node = make_node(PeerConfig(max_inbound=40))
    node.handle(NodeStarted(), T0)
    crowd = _crowd(node, honest=10, crowd=30)
    actions = inbound(node, "new", at(50, 1, 40_000), T0 + 100)
    (evicted,) = of_type(actions, Disconnect)
    assert evicted.peer == crowd[-1]  # the youngest of the biggest group
    assert "new" in node.peers
    assert node.peer_manager.counters.evictions == 1
    # Until the driver reports it gone, the victim is not evicted a second time.
    again = of_type(inbound(node, "newer", at(51, 1, 40_000), T0 + 101), Disconnect)
    assert [d.peer for d in again] == [crowd[-2]]


def test_a_persistent_peer_connected_inbound_is_never_evicted() -> None:
    friend = PersistentPeer(at(99, 30), node_id(30))
    node = make_node(PeerConfig(max_inbound=40, persistent=(friend,), discovery=False))
    node.handle(NodeStarted(), T0)
    crowd = _crowd(node, honest=10, crowd=29)
    inbound(node, "friend", at(99, 30, 40_000), T0 + 100, node_id(30))
    later = T0 + 100 + 60  # past any grace a young connection may have
    (evicted,) = of_type(inbound(node, "new", at(50, 1, 40_000), later), Disconnect)
    assert evicted.peer == crowd[-1]


def test_a_newcomer_is_refused_when_no_inbound_peer_may_be_evicted() -> None:
    members = frozenset(node_id(n) for n in range(4))
    node = make_node(PeerConfig(max_inbound=3, members=members))
    node.handle(NodeStarted(), T0)
    for n in range(3):
        inbound(node, f"m{n}", at(n + 1, 1, 40_000), T0, node_id(n))
    late = PeerConnected("late", False, node_id(3), at(9, 1, 40_000), at(9), ConnectionKind.INBOUND)
    refused = node.handle(late, T0 + 1)
    assert of_type(refused, Disconnect) == [Disconnect("late", "inbound slots are full")]
    assert "late" not in node.peers
    assert "late" not in node.peer_manager.peers
    assert node.peer_manager.counters.refused_inbound == 1
    # Turned away, but heard of: a member we now dial ourselves (no inbound slot needed).
    assert at(9) in node.peer_manager.book
    dials = of_type(node.handle(TimerFired(DIAL_TIMER), T0 + 2), Dial)
    assert dials == [Dial(at(9), ConnectionKind.PERSISTENT, node_id(3))]


def test_banned_ips_are_refused_before_and_after_the_handshake() -> None:
    node = make_node()
    node.handle(NodeStarted(), T0)
    manager = node.peer_manager
    banned = at(6, 6, 40_000)
    manager.ban(banned, T0 + 60, "test")
    assert not manager.accepts_inbound(banned, T0)
    assert manager.accepts_inbound(at(6, 7, 40_000), T0)
    assert of_type(inbound(node, "x", banned, T0), Disconnect) == [Disconnect("x", "banned")]
    assert manager.accepts_inbound(banned, T0 + 61)  # the ban ran out
    assert of_type(inbound(node, "y", banned, T0 + 61), Disconnect) == []


def test_discouraged_ips_are_admitted_only_while_inbound_slots_are_free() -> None:
    node = make_node(PeerConfig(max_inbound=2))
    node.handle(NodeStarted(), T0)
    bans = node.peer_manager.bans
    for ip in (at(7, 1).ip, at(7, 2).ip):
        bans.discourage(ip, T0 + 3600, "test")
    assert node.peer_manager.accepts_inbound(at(7, 1), T0)  # not banned
    assert of_type(inbound(node, "d1", at(7, 1, 40_000), T0), Disconnect) == []
    assert of_type(inbound(node, "ok", at(8, 1, 40_000), T0), Disconnect) == []
    refused = of_type(inbound(node, "d2", at(7, 2, 40_000), T0), Disconnect)
    assert refused == [Disconnect("d2", "discouraged, and inbound slots are full")]


# --- rate limits and punishment -----------------------------------------------------------


def test_a_flood_over_the_rate_limit_is_dropped_counted_and_then_punished() -> None:
    node = make_node()
    node.handle(NodeStarted(), T0)
    address = at(12, 1, 40_000)
    inbound(node, "flood", address, T0)
    ask = MessageReceived("flood", GetBlock(node.chain.tip_hash), 40)
    for _ in range(GET_BLOCK_BURST):
        assert len(of_type(node.handle(ask, T0), Send)) == 1  # served
    for strike in range(1, RATE_LIMIT_STRIKES):
        assert node.handle(ask, T0) == []  # dropped: the handler did not run
        assert node.peer_manager.counters.rate_limited == {"get_block": strike}
    punished = node.handle(ask, T0)
    assert of_type(punished, PeerPunished) == [
        PeerPunished("flood", Offence.RATE_LIMIT_EXCEEDED.value, "discourage", T0 + 300)
    ]
    assert [d.peer for d in of_type(punished, Disconnect)] == ["flood"]
    assert node.peer_manager.bans.is_discouraged(address.ip, T0)
    assert not node.peer_manager._dialable(at(12, 1), T0, set())
    # Until the driver closes it, what it sends is dropped without a second penalty.
    assert node.handle(ask, T0) == []
    assert node.peer_manager.counters.punished == 1


def test_an_invalid_transaction_costs_a_disconnection_and_a_discouragement() -> None:
    node = make_node()
    node.handle(NodeStarted(), T0)
    address = at(13, 1, 40_000)
    inbound(node, "liar", address, T0)
    tx = KIT.transfer(node.chain.chain_id, 0, 1, 5, 500, 0)
    forged = msgspec.structs.replace(tx, signature=bytes(64))
    actions = node.handle(MessageReceived("liar", TransactionMessage(forged), 200), T0)
    (punished,) = of_type(actions, PeerPunished)
    assert (punished.offence, punished.penalty) == ("invalid_transaction", "discourage")
    assert [d.peer for d in of_type(actions, Disconnect)] == ["liar"]
    assert node.peer_manager.bans.is_discouraged(address.ip, T0)
    assert not node.peer_manager.bans.is_banned(address.ip, T0)


def test_a_member_is_disconnected_but_never_banned() -> None:
    member = node_id(1)
    node = make_node(PeerConfig(members=frozenset({member})))
    node.handle(NodeStarted(), T0)
    address = at(14, 1, 40_000)
    inbound(node, "m", address, T0, member)
    actions = node.peer_manager.punish("m", Offence.INVALID_CONSENSUS_PROOF, T0, "forged")
    assert [d.peer for d in of_type(actions, Disconnect)] == ["m"]
    assert of_type(actions, PeerPunished) == []
    assert not node.peer_manager.bans.is_discouraged(address.ip, T0)


def test_a_ban_disconnects_every_connection_from_the_ip() -> None:
    node = make_node()
    node.handle(NodeStarted(), T0)
    inbound(node, "a", at(15, 1, 40_000), T0)
    inbound(node, "b", at(15, 1, 40_001), T0)
    answer(node, Dial(at(15, 1), ConnectionKind.FULL_RELAY), "c", T0)
    inbound(node, "other", at(15, 2, 40_000), T0)
    kicked = node.peer_manager.ban(at(15, 1), T0 + 3600, "by hand")
    assert sorted(d.peer for d in of_type(kicked, Disconnect)) == ["a", "b", "c"]
    assert node.peer_manager.bans.is_banned(at(15, 1).ip, T0)


# --- persistence --------------------------------------------------------------------------


def test_the_book_and_the_bans_survive_a_restart() -> None:
    store = MemoryStore()
    first = make_node(PeerConfig(bootstrap=(at(1), at(2))), store=store)
    first.handle(NodeStarted(), T0)
    fill_book(first, spread(groups=30))
    first.peer_manager.ban(at(77), T0 + 86_400, "by hand")
    first.handle(NodeStopping(), T0 + 1)
    second = make_node(store=store, seed=5)
    assert len(second.peer_manager.book) == len(first.peer_manager.book) >= 30
    assert second.peer_manager.bans.is_banned(at(77).ip, T0 + 2)
    assert second.peer_manager._state.dropped == []
    # The periodic save works without a clean stop too.
    fill_book(second, [at(150)])
    second.handle(NodeStarted(), T0 + 3)
    saved = second.handle(TimerFired(SAVE_TIMER), T0 + 4)
    assert ScheduleTimer(SAVE_TIMER, T0 + 4 + 15 * 60) in saved
    assert at(150) in make_node(store=store, seed=6).peer_manager.book


@pytest.mark.parametrize("key", [BOOK_KEY, BANS_KEY, ANCHORS_KEY])
def test_a_corrupt_blob_is_dropped_and_the_node_still_starts(key: str) -> None:
    store = MemoryStore()
    first = make_node(store=store)
    fill_book(first, spread(groups=30))
    first.peer_manager.ban(at(77), T0 + 86_400, "by hand")
    first.handle(NodeStopping(), T0)
    store.write(WriteBatch(meta={key: b"\x93\x01garbage"}))
    node = make_node(store=store, seed=2)
    actions = node.handle(NodeStarted(), T0 + 1)
    assert [d.split(":")[0] for d in node.peer_manager._state.dropped] == [
        {BOOK_KEY: "address book", BANS_KEY: "ban list", ANCHORS_KEY: "anchors"}[key]
    ]
    assert of_type(actions, ScheduleTimer)  # it runs
    assert (len(node.peer_manager.book) > 0) == (key != BOOK_KEY)
    assert node.peer_manager.bans.is_banned(at(77).ip, T0) == (key != BANS_KEY)


def test_unusable_anchors_are_dropped_not_dialled() -> None:
    store = MemoryStore()
    bogus = [NetAddress(bytes(4), PORT), NetAddress(b"\x0a\x01\x02\x03\x04", PORT), at(3)]
    store.write(WriteBatch(meta={ANCHORS_KEY: encode(bogus[1:])}))
    node = make_node(store=store)
    dials = of_type(node.handle(NodeStarted(), T0), Dial)
    assert dials == [Dial(at(3), ConnectionKind.BLOCK_RELAY, None)]
    assert len(node.peer_manager._state.dropped) == 1
    store.write(WriteBatch(meta={ANCHORS_KEY: encode(bogus[:1])}))
    assert of_type(make_node(store=store).handle(NodeStarted(), T0), Dial) == []

"""Peer exchange through `Node.handle`: who is asked and answered, the cached GetAddr
sample, the per-peer address token bucket, flood and bad-address punishment, relay of
fresh addresses to two peers, and member-only filtering."""

from __future__ import annotations

import random
from typing import TypeVar

from meshchain.chainkit import ChainKit
from meshchain.core.events import (
    Action,
    ConnectionKind,
    Dial,
    MessageReceived,
    NodeStarted,
    NodeStopping,
    PeerConnected,
    PeerDisconnected,
    PeerPunished,
    Send,
    TimerFired,
)
from meshchain.core.node import Node, NodeConfig
from meshchain.core.peers.address import NetAddress
from meshchain.core.peers.addrex import (
    ADDR_FLOOD_LIMIT,
    ADDR_RELAY_FANOUT,
    BAD_ADDR_LIMIT,
    GETADDR_CACHE_LIFETIME,
    GETADDR_REPEAT_LIMIT,
    MAX_ADDR_TO_RELAY,
)
from meshchain.core.peers.bans import Offence
from meshchain.core.peers.config import PeerConfig
from meshchain.core.peers.manager import DIAL_TIMER
from meshchain.core.store import MemoryStore
from meshchain.core.wire.messages import MAX_ADDR_PER_MESSAGE, Addr, AddrEntry, GetAddr

KIT = ChainKit(seed=8, accounts=3)
T0 = KIT.genesis.timestamp_ms / 1000
PORT = 9000
OURS = (999).to_bytes(32, "big")
LISTEN = NetAddress(bytes([10, 250, 0, 1]), PORT)
M = TypeVar("M")


def at(group: int, host: int = 1, port: int = PORT) -> NetAddress:
    """An address in group `group` (10.group.0.0/16)."""
    return NetAddress(bytes([10, group, host >> 8, host & 0xFF]), port)


def numbered(n: int) -> NetAddress:
    """The n-th of many distinct addresses, spread over the groups of 11.0.0.0/8."""
    return NetAddress(bytes([11]) + (n * 7919 % (1 << 24)).to_bytes(3, "big"), PORT)


def node_id(n: int) -> bytes:
    return (1000 + n).to_bytes(32, "big")


def entries(addresses: list[NetAddress], seen: float, ident: bytes = b"") -> list[AddrEntry]:
    return [AddrEntry(a, ident, 0, int(seen)) for a in addresses]


def make_node(members: frozenset[bytes] | None = None) -> Node:
    config = PeerConfig(node_id=OURS, listen=LISTEN, members=members)
    node = Node(NodeConfig(KIT.genesis, peers=config), MemoryStore(), random.Random(1))
    node.handle(NodeStarted(), T0)
    return node


def sent(actions: list[Action], kind: type[M]) -> list[tuple[str, M]]:
    """(peer, message) for each Send of a message of this type."""
    return [
        (a.peer, a.message) for a in actions if isinstance(a, Send) and isinstance(a.message, kind)
    ]


def outbound(node: Node, peer: str, kind: ConnectionKind, n: int, now: float = T0) -> list[Action]:
    address = at(n)
    event = PeerConnected(peer, True, node_id(n), address, address, kind)
    return node.handle(event, now)


def inbound(node: Node, peer: str, n: int, now: float = T0, ident: bytes = b"") -> list[Action]:
    event = PeerConnected(peer, False, ident, at(n, 1, 40_000), None, ConnectionKind.INBOUND)
    return node.handle(event, now)


def receive(node: Node, peer: str, message: Addr | GetAddr, now: float) -> list[Action]:
    return node.handle(MessageReceived(peer, message, 100), now)


def punished(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.offence, a.penalty) for a in actions if isinstance(a, PeerPunished)]


def test_get_addr_goes_once_to_outbound_full_relay_peers_with_our_address() -> None:
    node = make_node()
    own = AddrEntry(LISTEN, OURS, 0, int(T0))
    for n, peer, kind in (
        (1, "full", ConnectionKind.FULL_RELAY),
        (2, "pers", ConnectionKind.PERSISTENT),
    ):
        actions = outbound(node, peer, kind, n)
        assert sent(actions, GetAddr) == [(peer, GetAddr())]
        assert sent(actions, Addr) == [(peer, Addr([own]))]  # self-advertisement
    assert sent(inbound(node, "in", 3), GetAddr) == []
    assert sent(inbound(node, "in2", 4), Addr) == []
    later = receive(node, "full", Addr(entries([at(20)], T0)), T0 + 1)
    assert sent(later, GetAddr) == []


def test_block_relay_only_and_feeler_connections_carry_no_addresses() -> None:
    node = make_node()
    inbound(node, "in", 3)
    for n, peer, kind in (
        (5, "block", ConnectionKind.BLOCK_RELAY),
        (6, "feeler", ConnectionKind.FEELER),
    ):
        actions = outbound(node, peer, kind, n)
        assert sent(actions, GetAddr) == []
        assert sent(actions, Addr) == []
    before = len(node.peer_manager.book)
    assert receive(node, "block", Addr(entries([at(30)], T0 + 1)), T0 + 1) == []
    assert len(node.peer_manager.book) == before
    # Its other end may ask (it does not know the link is block-relay-only): the shared
    # sample goes out once, and that is all the link ever carries.
    node.peer_manager.book.add(entries([at(n) for n in range(60, 100)], T0), None, T0)
    ((_, answer),) = sent(receive(node, "block", GetAddr(), T0 + 1), Addr)
    assert answer.entries
    assert receive(node, "block", GetAddr(), T0 + 100) == []
    for n in range(10):  # fresh addresses relayed: never to the block-relay-only peer
        relayed = receive(node, "in", Addr(entries([at(40 + n)], T0 + 20 * n)), T0 + 20 * n)
        assert all(peer != "block" for peer, _ in sent(relayed, Addr))


def test_an_inbound_get_addr_is_answered_once_and_repeats_are_punished() -> None:
    node = make_node()
    node.peer_manager.book.add(entries([at(n) for n in range(1, 101)], T0), None, T0)
    inbound(node, "in", 201)
    ((_, first),) = sent(receive(node, "in", GetAddr(), T0), Addr)
    assert len(first.entries) == 23 + 1  # 23% of the book, and our own address
    now = T0
    for _ in range(GETADDR_REPEAT_LIMIT):
        now += 10  # within the GetAddr rate limit
        assert receive(node, "in", GetAddr(), now) == []
    spam = receive(node, "in", GetAddr(), now + 10)
    assert punished(spam) == [("getaddr_spam", "disconnect")]


def test_the_get_addr_answer_is_a_sample_cached_for_a_day() -> None:
    node = make_node()
    node.peer_manager.book.add(entries([at(n) for n in range(1, 101)], T0), None, T0)
    answers = []
    for n, when in enumerate((T0, T0 + 3600, T0 + GETADDR_CACHE_LIFETIME + 1)):
        inbound(node, f"in{n}", 200 + n, when)
        ((_, message),) = sent(receive(node, f"in{n}", GetAddr(), when), Addr)
        answers.append({e.address for e in message.entries})
    assert answers[0] == answers[1]
    assert answers[2] != answers[0]


def test_a_sample_from_a_young_book_is_retaken_once_the_book_has_doubled() -> None:
    node = make_node()
    book = node.peer_manager.book
    book.add(entries([at(n) for n in range(1, 11)], T0), None, T0)
    sizes = []
    for n, more in enumerate((0, 15, 5)):  # 10 entries, then 25 (2.5x), then 30 (1.2x)
        book.add(entries([at(100 + len(book) + i) for i in range(more)], T0), None, T0)
        inbound(node, f"in{n}", 200 + n, T0 + n)
        ((_, message),) = sent(receive(node, f"in{n}", GetAddr(), T0 + n), Addr)
        sizes.append(len(message.entries))
    assert sizes == [10 * 23 // 100 + 1, 25 * 23 // 100 + 1, 25 * 23 // 100 + 1]


def test_the_get_addr_answer_leaves_out_what_the_peer_told_us() -> None:
    node = make_node()
    node.peer_manager.book.add(entries([at(n) for n in range(1, 101)], T0), None, T0)
    inbound(node, "first", 200)
    ((_, sample),) = sent(receive(node, "first", GetAddr(), T0), Addr)
    told = [e.address for e in sample.entries[:3]]
    inbound(node, "second", 201)
    for n, address in enumerate(told):  # one at a time: the bucket refills 1 per 10 s
        receive(node, "second", Addr(entries([address], T0 + 10 * n)), T0 + 10 * n)
    ((_, rest),) = sent(receive(node, "second", GetAddr(), T0 + 40), Addr)
    assert [e.address for e in rest.entries] == [
        e.address for e in sample.entries if e.address not in told
    ]


def _flood(node: Node, peer: str, start: int, now: float) -> list[Action]:
    """A full Addr message of fresh addresses never sent before."""
    batch = [numbered(start + i) for i in range(MAX_ADDR_PER_MESSAGE)]
    return receive(node, peer, Addr(entries(batch, now)), now)


def test_the_token_bucket_admits_one_address_and_then_one_per_ten_seconds() -> None:
    node = make_node()
    book = node.peer_manager.book
    inbound(node, "in", 3)
    _flood(node, "in", 0, T0)
    assert len(book) == 1
    _flood(node, "in", 1000, T0 + 100)
    assert len(book) == 1 + 10
    assert node.peer_manager.exchange._peers["in"].dropped == 2 * MAX_ADDR_PER_MESSAGE - 11


def test_after_our_get_addr_a_whole_message_is_admitted() -> None:
    node = make_node()
    book = node.peer_manager.book
    outbound(node, "out", ConnectionKind.FULL_RELAY, 3)
    _flood(node, "out", 0, T0)
    state = node.peer_manager.exchange._peers["out"]
    assert state.dropped == 0
    added = len(book)
    # Stored, bar those that lost their slot (one source group reaches few buckets).
    assert added > MAX_ADDR_PER_MESSAGE // 2
    _flood(node, "out", 1000, T0)
    assert state.dropped == MAX_ADDR_PER_MESSAGE - 1  # one token was left: 1 + 1,000
    assert len(book) <= added + 1


def test_an_address_flood_is_punished_past_the_limit() -> None:
    node = make_node()
    inbound(node, "in", 3)
    messages = ADDR_FLOOD_LIMIT // MAX_ADDR_PER_MESSAGE
    for n in range(messages):  # 999 + 9 x 1,000 dropped: not yet over
        assert punished(_flood(node, "in", n * 1000, T0)) == []
    assert punished(_flood(node, "in", messages * 1000, T0)) == [("addr_flood", "discourage")]
    assert node.peer_manager.bans.is_discouraged(at(3).ip, T0)


def test_unusable_and_absurdly_timed_addresses_are_punished_past_the_limit() -> None:
    node = make_node()
    outbound(node, "out", ConnectionKind.FULL_RELAY, 3)
    future = entries([numbered(n) for n in range(BAD_ADDR_LIMIT)], T0 + 86_400)
    assert punished(receive(node, "out", Addr(future), T0)) == []
    state = node.peer_manager.exchange._peers["out"]
    assert state.bad == BAD_ADDR_LIMIT
    nowhere = entries([NetAddress(bytes(4), PORT)], T0 + 10)  # 0.0.0.0
    assert punished(receive(node, "out", Addr(nowhere), T0 + 10)) == [
        ("bad_addresses", "discourage")
    ]


def test_a_small_fresh_addr_is_relayed_to_two_peers_and_only_once() -> None:
    node = make_node()
    inbound(node, "source", 3)
    for n in range(5):
        inbound(node, f"p{n}", 10 + n)
    for n in range(1, 8):  # each to exactly two of the five others, never back
        news = Addr(entries([at(50 + n)], T0 + 10 * n))
        relayed = sent(receive(node, "source", news, T0 + 10 * n), Addr)
        assert len(relayed) == 2
        assert all(peer != "source" and message == news for peer, message in relayed)
    news = Addr(entries([at(50)], T0 + 100))
    relayed = sent(receive(node, "source", news, T0 + 100), Addr)
    assert at(50) in node.peer_manager.book
    again = Addr(entries([at(50)], T0 + 115))
    assert sent(receive(node, "source", again, T0 + 115), Addr) == []  # they have it
    inbound(node, "other", 20, T0 + 115)
    from_other = sent(receive(node, "other", again, T0 + 116), Addr)
    first_targets = {peer for peer, _ in relayed}
    assert not first_targets & {peer for peer, _ in from_other}


def test_stale_or_large_addr_messages_are_stored_but_not_relayed() -> None:
    node = make_node()
    inbound(node, "source", 3)
    for n in range(5):
        inbound(node, f"p{n}", 10 + n)
    stale = Addr(entries([at(50)], T0 + 1 - 3600))
    assert sent(receive(node, "source", stale, T0 + 1), Addr) == []
    big = Addr(entries([at(60 + n) for n in range(MAX_ADDR_TO_RELAY + 1)], T0 + 200))
    assert sent(receive(node, "source", big, T0 + 200), Addr) == []
    assert at(50) in node.peer_manager.book
    assert any(at(60 + n) in node.peer_manager.book for n in range(MAX_ADDR_TO_RELAY + 1))


def test_the_answer_to_our_get_addr_is_stored_and_not_relayed() -> None:
    node = make_node()
    for n in range(5):
        inbound(node, f"p{n}", 10 + n)
    outbound(node, "out", ConnectionKind.FULL_RELAY, 3)
    reply = Addr(entries([at(100 + n) for n in range(MAX_ADDR_TO_RELAY + 10)], T0 + 1))
    assert sent(receive(node, "out", reply, T0 + 1), Addr) == []
    assert all(at(100 + n) in node.peer_manager.book for n in range(MAX_ADDR_TO_RELAY + 10))
    # What it sends after answering is gossip like any other.
    later = Addr(entries([at(200)], T0 + 30))
    assert len(sent(receive(node, "out", later, T0 + 30), Addr)) == ADDR_RELAY_FANOUT


def test_a_small_answer_to_our_get_addr_is_relayed_so_small_networks_meet() -> None:
    node = make_node()
    inbound(node, "c", 10)
    outbound(node, "b", ConnectionKind.FULL_RELAY, 3)
    own_entry = Addr([AddrEntry(at(3), node_id(3), 0, int(T0))])  # b's answer: itself
    assert sent(receive(node, "b", own_entry, T0), Addr) == [("c", own_entry)]


def test_discouraged_addresses_are_neither_stored_nor_relayed_nor_handed_out() -> None:
    node = make_node()
    bans = node.peer_manager.bans
    bans.discourage(at(50).ip, T0 + 3600, "test")
    inbound(node, "source", 3)
    for n in range(5):
        inbound(node, f"p{n}", 10 + n)
    assert sent(receive(node, "source", Addr(entries([at(50)], T0)), T0), Addr) == []
    assert at(50) not in node.peer_manager.book
    bans.discourage(at(51).ip, T0 + 3600, "test")  # admitted inbound: slots are free
    event = PeerConnected(
        "d", False, node_id(51), at(51, 1, 40_000), at(51), ConnectionKind.INBOUND
    )
    node.handle(event, T0)
    assert at(51) not in node.peer_manager.book  # nor its word for where it listens
    node.peer_manager.book.add(entries([at(n) for n in range(60, 160)], T0), None, T0)
    for n in range(60, 160):
        bans.discourage(at(n).ip, T0 + 3600, "test")
    ((_, message),) = sent(receive(node, "p0", GetAddr(), T0), Addr)
    assert [e.address for e in message.entries] == [LISTEN]


def test_member_mode_keeps_and_relays_members_only_and_dials_them() -> None:
    member, other_member, outsider, third = node_id(3), node_id(4), node_id(5), node_id(6)
    node = make_node(members=frozenset({OURS, member, other_member, third}))
    book = node.peer_manager.book
    outbound(node, "m", ConnectionKind.FULL_RELAY, 3)  # asked: its bucket takes all three
    inbound(node, "m2", 4, T0, other_member)
    news = [
        AddrEntry(at(50), third, 0, int(T0 + 1)),
        AddrEntry(at(60), outsider, 0, int(T0 + 1)),
        AddrEntry(at(70), b"", 0, int(T0 + 1)),
    ]
    relayed = sent(receive(node, "m", Addr(news), T0 + 1), Addr)
    assert relayed == [("m2", Addr(news[:1]))]
    assert at(50) in book
    assert at(60) not in book
    assert at(70) not in book
    dials = node.handle(TimerFired(DIAL_TIMER), T0 + 2)
    assert [a for a in dials if isinstance(a, Dial)] == [
        Dial(at(50), ConnectionKind.PERSISTENT, third)
    ]


def test_member_mode_never_dials_an_unusable_listen_address() -> None:
    member = node_id(1)
    node = make_node(members=frozenset({OURS, member}))
    nowhere = NetAddress(bytes(4), PORT)
    event = PeerConnected("m", False, member, at(3, 1, 40_000), nowhere, ConnectionKind.INBOUND)
    node.handle(event, T0)
    node.handle(PeerDisconnected("m", "bye"), T0)  # a member we would stay connected to
    for step in range(1, 5):
        actions = node.handle(TimerFired(DIAL_TIMER), T0 + step)
        assert [a for a in actions if isinstance(a, Dial)] == []


def test_no_address_goes_to_a_peer_being_disconnected() -> None:
    node = make_node()
    inbound(node, "source", 3)
    inbound(node, "kept", 4)
    inbound(node, "leaving", 5)
    node.peer_manager.punish("leaving", Offence.PROTOCOL_VIOLATION, T0, "test")
    for n in range(5):
        news = Addr(entries([at(50 + n)], T0 + 10 * n))
        relayed = sent(receive(node, "source", news, T0 + 10 * n), Addr)
        assert [peer for peer, _ in relayed] == ["kept"]


def test_addresses_dropped_by_the_bucket_are_not_taken_as_known_to_the_sender() -> None:
    node = make_node()
    inbound(node, "flooder", 3)
    inbound(node, "source", 4)
    _flood(node, "flooder", 0, T0)  # one admitted, 999 dropped unread
    dropped = numbered(500)
    news = Addr(entries([dropped], T0 + 1))
    assert sent(receive(node, "source", news, T0 + 1), Addr) == [("flooder", news)]


def test_members_learned_from_the_network_are_dialled_again_after_a_restart() -> None:
    store = MemoryStore()
    member, other = node_id(3), node_id(4)
    members = frozenset({OURS, member, other})
    config = NodeConfig(KIT.genesis, peers=PeerConfig(node_id=OURS, members=members))
    first = Node(config, store, random.Random(1))
    first.handle(NodeStarted(), T0)
    inbound(first, "m", 3, T0, member)
    receive(first, "m", Addr([AddrEntry(at(50), other, 0, int(T0))]), T0)
    first.handle(NodeStopping(), T0 + 1)
    second = Node(config, store, random.Random(2))
    dials = [a for a in second.handle(NodeStarted(), T0 + 2) if isinstance(a, Dial)]
    assert dials == [Dial(at(50), ConnectionKind.PERSISTENT, other)]

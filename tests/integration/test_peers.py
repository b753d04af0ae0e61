"""Peer management of real nodes over TCP: eviction, address floods, bans, members.

Nodes run in-process (P2PService + NodeDriver + Node on a MemoryStore) on one event
loop. Linux routes all of 127.0.0.0/8 to loopback, so peers connect from their own
source addresses (127.0.0.2, 127.0.0.3, ...) and the node under test sees distinct IPs:
what its per-IP limits, bans and address groups key on. Proof of work is not built yet,
so the "open network" nodes run a private (PoA) chain with open admission.

Every wait is a condition polled with a generous deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import random
import time

import msgspec
from loops import Runner
from peerkit import (
    DEADLINE,
    QUIET,
    TARGET,
    Fleet,
    LiveNode,
    RawPeer,
    Seats,
    fresh_addresses,
    network,
    until,
)

from meshchain.cli.setup import COIN
from meshchain.core.chain.tx import TxBody, sign_transaction
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import NodeStarted, PeerConnected, PeerPunished, TimerFired
from meshchain.core.peers.address import GroupPolicy, net_address
from meshchain.core.peers.addrex import ADDR_FLOOD_LIMIT, ADDR_RATE
from meshchain.core.peers.config import PeerConfig, PersistentPeer
from meshchain.core.peers.manager import DIAL_INTERVAL, PERSISTENT_RETRY_INITIAL
from meshchain.core.store import MemoryStore
from meshchain.core.wire.messages import MAX_ADDR_PER_MESSAGE, GetAddr, TransactionMessage

# --- 1. inbound eviction --------------------------------------------------------------------


def test_a_full_node_evicts_the_youngest_peer_of_its_most_crowded_group(run: Runner) -> None:
    """25 inbound slots, each IP its own group (ipv4_bits=32): 16 singletons, then 8 peers
    behind one IP (a NAT), then one more singleton fill them. Eviction protects by group,
    ping, useful work and age, then takes the youngest of the largest group: with no ping
    times, no transactions and no blocks that is the last of the 8, never the younger
    singleton. (Under ~21 inbound peers every one is protected, as in Bitcoin, and a
    newcomer is refused instead.)"""
    net = network(27, seed=11)
    limit = 25
    sources = [f"127.0.0.{10 + i}" for i in range(16)] + ["127.0.0.2"] * 8 + ["127.0.0.30"]

    async def scenario() -> None:
        fleet = Fleet(net)
        try:
            config = PeerConfig(
                max_inbound=limit,
                groups=GroupPolicy(ipv4_bits=32),
                discovery=False,
                eviction_grace=0.0,  # the peers arrive within seconds: judge them at once
            )
            target = await fleet.start(0, peers=config, timeouts=QUIET)
            clients: list[LiveNode] = []
            for index, source in enumerate(sources, start=1):
                client = await fleet.start(index, host=source, port=None, timeouts=QUIET)
                clients.append(client)
                await client.dial(target)  # one at a time: connection order is age order
                await until(lambda: len(target.node.peers) == len(clients), "the session")
            crowd, latecomer = clients[16:24], clients[24]
            assert len(target.service.peers) == limit
            newcomer = await fleet.start(26, host="127.0.0.40", port=None)
            await newcomer.dial(target)
            victim = crowd[-1]
            await until(
                lambda: newcomer.connected_to(target) and not victim.connected_to(target),
                "the newcomer in, the victim out",
            )
            assert target.node.peer_manager.counters.evictions == 1
            assert set(target.service.peers) == {c.id for c in [*clients, newcomer]} - {victim.id}
            assert set(target.node.peers) == set(target.service.peers)
            assert latecomer.connected_to(target)  # younger than the victim, but alone
            assert target.driver.peak_peers == limit  # never over, once each input was handled
            session = newcomer.session_with(target)
            await until(lambda: session.pongs_received >= 3, "the newcomer served (pongs)")
        finally:
            await fleet.stop()

    run(scenario)


# --- 2. address floods ----------------------------------------------------------------------


def test_an_addr_flood_is_rate_limited_then_punished(run: Runner) -> None:
    """A raw inbound peer sends Addr messages of 1,000 fresh addresses. Unasked, its
    token bucket lets 1 + 0.1/s into the book and drops the rest; past 10,000 dropped
    it is disconnected and its IP discouraged. A peer the node dialled and asked with
    GetAddr gets a whole message in (+1,000), once. An honest peer is served throughout."""
    net = network(4, seed=12)
    rng = random.Random(3)

    async def scenario() -> None:
        fleet = Fleet(net)
        listener: asyncio.Server | None = None
        try:
            target = await fleet.start(0, timeouts=QUIET)
            honest = await fleet.start(1, host="127.0.0.2", port=None)
            await honest.dial(target)
            await until(lambda: target.connected_to(honest), "the honest session")
            session = honest.session_with(target)
            book, exchange = target.node.peer_manager.book, target.node.peer_manager.exchange
            genesis_hash = target.node.chain.tip_hash
            before, began = len(book), time.monotonic()

            def allowance() -> float:  # the unasked flooder's bucket, at most
                return 1 + ADDR_RATE * (time.monotonic() - began) + 1e-6

            flooder = await RawPeer.connect(
                net.keys[2], target.node.chain.chain_id, target.port, "127.0.0.3"
            )
            await until(lambda: flooder.established, "the flooder's session")
            pongs = session.pongs_received
            flooder.send(*(fresh_addresses(rng) for _ in range(5)))
            await flooder.round_trip(genesis_hash)
            grown = len(book) - before
            assert grown <= allowance()
            dropped = exchange._peers[flooder.id].dropped
            assert dropped >= 5 * MAX_ADDR_PER_MESSAGE - allowance()
            # Past the limit (10,000 dropped): punished by the offence table.
            past_limit = ADDR_FLOOD_LIMIT // MAX_ADDR_PER_MESSAGE + 2 - 5
            flooder.send(*(fresh_addresses(rng) for _ in range(past_limit)))
            await until(lambda: flooder.closed, "the flooder to be disconnected")
            assert "addr_flood" in flooder.close_reason
            assert len(book) - before <= allowance()
            ip = net_address("127.0.0.3", 0).ip
            assert target.node.peer_manager.bans.is_discouraged(ip, time.time())
            assert not target.node.peer_manager.bans.is_banned(ip, time.time())
            punished = [a for _, a in target.driver.actions if isinstance(a, PeerPunished)]
            assert [(p.peer, p.offence, p.penalty) for p in punished] == [
                (flooder.id, "addr_flood", "discourage")
            ]
            await until(lambda: session.pongs_received >= pongs + 5, "pongs after the flood")
            assert target.connected_to(honest)

            # Asked (the node dialled it and sent GetAddr): one message in full, no more.
            answered: list[RawPeer] = []

            def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                answered.append(
                    RawPeer(
                        net.keys[3], target.node.chain.chain_id, reader, writer, initiator=False
                    )
                )

            listener = await asyncio.start_server(accept, "127.0.0.4", 0)
            asked_at, before_asked = time.monotonic(), len(book)
            await target.service.dial("127.0.0.4", int(listener.sockets[0].getsockname()[1]))
            await until(lambda: bool(answered) and answered[0].count(GetAddr) == 1, "GetAddr")
            solicited = answered[0]
            solicited.send(fresh_addresses(rng), fresh_addresses(rng))
            await solicited.round_trip(genesis_hash)
            grown = len(book) - before_asked
            limit = MAX_ADDR_PER_MESSAGE + 1 + ADDR_RATE * (time.monotonic() - asked_at) + 1e-6
            assert MAX_ADDR_PER_MESSAGE // 2 < grown <= limit  # Bitcoin's book drops a few
            assert exchange._peers[solicited.id].dropped >= 2 * MAX_ADDR_PER_MESSAGE - limit
            assert target.connected_to(honest)
            assert not solicited.closed
        finally:
            if listener is not None:
                listener.close()
            await fleet.stop()

    run(scenario)


# --- 3. bans --------------------------------------------------------------------------------


def test_a_banned_ip_is_refused_before_the_handshake(run: Runner) -> None:
    """A peer that sends a forged transaction is disconnected and its IP discouraged (it
    may come back while slots are free); once the operator bans the IP, its connections
    are cut, and the next one is aborted before the node sends a byte. Peers on other
    loopback IPs connect and are served throughout."""
    net = network(4, seed=13)

    async def scenario() -> None:
        fleet = Fleet(net)
        try:
            config = PeerConfig(groups=GroupPolicy(ipv4_bits=32), discovery=False)
            target = await fleet.start(0, peers=config)
            honest = await fleet.start(1, host="127.0.0.2", port=None)
            liar = await fleet.start(2, host="127.0.0.3", port=None)
            for peer in (honest, liar):
                await peer.dial(target)
            await until(lambda: len(target.service.peers) == 2, "both sessions")
            manager, ip = target.node.peer_manager, net_address("127.0.0.3", 0).ip
            body = TxBody(
                target.node.chain.chain_id, net.wallet.public_key, bytes(20), COIN, 10_000, 0
            )
            tx = sign_transaction(body, net.wallet)
            forged = msgspec.structs.replace(tx, signature=bytes(64))
            valid = sign_transaction(msgspec.structs.replace(body, amount=2 * COIN), net.wallet)
            # Sent in one tick, so they arrive in one read: nothing after the forgery counts.
            liar.service.send(target.id, TransactionMessage(forged))
            liar.service.send(target.id, TransactionMessage(valid))
            await until(lambda: not liar.connected_to(target), "the liar disconnected")
            assert manager.bans.is_discouraged(ip, time.time())
            assert not manager.bans.is_banned(ip, time.time())
            assert len(target.node.mempool) == 0

            await liar.dial(target)  # discouraged, not banned: welcome while slots are free
            await until(lambda: target.connected_to(liar), "the discouraged peer back")
            target.driver.execute(
                manager.ban(net_address("127.0.0.3", 0), time.time() + 3600, "operator")
            )
            await until(lambda: not liar.connected_to(target), "the banned peer cut off")
            banned_at = time.monotonic()

            attempt = await liar.service.dial(TARGET, target.port)
            await asyncio.wait_for(attempt.closed, DEADLINE)
            assert attempt.session is not None
            assert attempt.session.bytes_received == 0  # not one handshake byte came back
            assert attempt.peer_id is None
            assert not liar.service.peers
            stranger = SecretKey.generate(random.Random(99))
            raw = await RawPeer.connect(
                stranger, target.node.chain.chain_id, target.port, "127.0.0.3"
            )
            await until(lambda: raw.closed, "the raw attempt refused")
            assert not raw.established
            assert raw.session.bytes_received == 0
            connected_after = [
                e
                for t, e in target.driver.inputs
                if t >= banned_at and isinstance(e, PeerConnected)
            ]
            assert connected_after == []  # the node never heard of the attempts

            newcomer = await fleet.start(3, host="127.0.0.4", port=None)
            await newcomer.dial(target)
            await until(lambda: target.connected_to(newcomer), "another IP still welcome")
            session = honest.session_with(target)
            pongs = session.pongs_received
            await until(lambda: session.pongs_received >= pongs + 3, "the honest peer served")
            assert set(target.service.peers) == {honest.id, newcomer.id}
        finally:
            await fleet.stop()

    run(scenario)


# --- 4. members ------------------------------------------------------------------------------


def test_members_redial_a_restarted_member_and_never_an_outsider(run: Runner) -> None:
    """A private chain of three members; A keeps B as a persistent peer, C keeps A. B
    stops: A redials it with backoff (1 s, then 2 s, each jittered by +-50%). B comes
    back on the same port with the same store, and the session is back. A non-member
    that keeps dialling A is refused after the handshake, and nobody ever dials it."""
    net = network(4, seed=14)
    members = frozenset(key.public_key for key in net.keys[:3])
    seats = Seats.take(11, 4)
    ids = [key.public_key for key in net.keys]

    async def scenario() -> None:
        fleet = Fleet(net)
        try:
            b_store = MemoryStore()
            b = await seats.start(fleet, 1, members=members, store=b_store)
            a = await seats.start(fleet, 0, 1, members=members)
            c = await seats.start(fleet, 2, 0, members=members)
            outsider = await seats.start(fleet, 3, 0, members=None)
            await until(lambda: a.connected_to(b) and a.connected_to(c), "A with B and C")
            await until(lambda: bool(outsider.driver.failures(seats[0])), "the outsider refused")

            await b.stop()
            old_b, stopped_at = b, time.monotonic()
            await until(lambda: bool(a.driver.departures(b.id)), "A to see B go")
            gone = a.driver.departures(b.id)[-1]

            def failed() -> list[float]:
                return [t for t in a.driver.failures(seats[1]) if t >= gone]

            await until(lambda: len(failed()) >= 2, "two redials to fail, B being down")
            dials = [t for t in a.driver.dials(seats[1]) if t >= gone]
            slack = DIAL_INTERVAL + 2.0  # the dial round's period, and a loaded machine
            first, second = PERSISTENT_RETRY_INITIAL, 2 * PERSISTENT_RETRY_INITIAL
            assert 0.5 * first <= dials[0] - gone <= 1.5 * first + slack
            assert 0.5 * second <= dials[1] - failed()[0] <= 1.5 * second + slack
            b = await seats.start(fleet, 1, members=members, store=b_store)
            await until(lambda: a.connected_to(b) and b.connected_to(a), "A and B again")
            # The stopped B's clock stood still: no ghost of it kept dialling as B.
            ticks = [t for t, e in old_b.driver.inputs if isinstance(e, TimerFired)]
            assert not [t for t in ticks if t > stopped_at]

            for live in (a, b, c):
                assert outsider.id not in live.service.peers
                assert live.driver.dials(seats[3]) == []  # never dialled back
                assert seats[3] not in live.node.peer_manager.book
                assert not any(
                    isinstance(e, PeerConnected) and e.node_id == ids[3]
                    for _, e in live.driver.inputs
                )
            assert not outsider.service.peers
            assert c.connected_to(a)  # untouched by B's restart
        finally:
            await fleet.stop()

    run(scenario)


def test_two_members_dialling_each_other_at_once_keep_one_session(run: Runner) -> None:
    """Each node of a pair that dials the other at the same moment establishes both
    sessions, in opposite orders; both keep the connection the lower key dialled, so
    neither has to redial (without the rule both hung up, and met again after backoff)."""
    net = network(2, seed=15)
    members = frozenset(key.public_key for key in net.keys)
    seats = Seats.take(21, 2)

    async def scenario() -> None:
        fleet = Fleet(net)
        try:
            a = await seats.start(fleet, 0, 1, members=members, started=False)
            b = await seats.start(fleet, 1, 0, members=members, started=False)
            a.driver.feed(NodeStarted())
            b.driver.feed(NodeStarted())
            await until(lambda: a.connected_to(b) and b.connected_to(a), "one session")
            # On a loaded machine one dial may win outright; the other side then never
            # dials. Either way: at most one dial each, and the two agree on one session.
            assert len(a.driver.dials(seats[1])) <= 1
            assert len(b.driver.dials(seats[0])) <= 1
            await until(
                lambda: a.service.peers[b.id].initiator != b.service.peers[a.id].initiator,
                "both ends on the same connection",
            )
            if a.driver.dials(seats[1]) and b.driver.dials(seats[0]):  # a true race
                lower = a if a.key.public_key < b.key.public_key else b
                higher = b if lower is a else a
                assert lower.service.peers[higher.id].initiator
        finally:
            await fleet.stop()

    run(scenario)


def test_a_dial_over_the_connection_cap_is_answered(run: Runner) -> None:
    """A node whose connections are all taken refuses its own outbound connection too;
    the node hears of it (DialFailed) and redials its persistent peer once a slot frees.
    Unanswered, the dial stayed "in flight" and the peer was not dialled again."""
    net = network(2, seed=16)

    async def scenario() -> None:
        fleet = Fleet(net)
        try:
            peer = await fleet.start(1, host="127.0.0.32", port=0)
            there = net_address("127.0.0.32", peer.port)
            config = PeerConfig(persistent=(PersistentPeer(there, peer.key.public_key),))
            node = await fleet.start(
                0, peers=config, host="127.0.0.31", started=False, max_connections=1
            )
            _, squatter = await asyncio.open_connection("127.0.0.31", node.port)
            await until(lambda: len(node.service.connections) == 1, "the slot taken")
            node.driver.feed(NodeStarted())
            await until(lambda: bool(node.driver.failures(there)), "the dial answered")
            assert not node.connected_to(peer)
            squatter.close()
            await until(lambda: node.connected_to(peer), "the redial once a slot is free")
        finally:
            await fleet.stop()

    run(scenario)


def test_bytes_the_transport_rejects_discourage_the_sender(run: Runner) -> None:
    """A peer whose record does not decode ends its session (the transport's call) and,
    through `SessionViolation`, is charged in the offence table like any other offence:
    its IP is discouraged. An honest peer on another IP is untouched."""
    net = network(3, seed=17)

    async def scenario() -> None:
        fleet = Fleet(net)
        try:
            target = await fleet.start(0, timeouts=QUIET)
            honest = await fleet.start(1, host="127.0.0.2", port=None)
            await honest.dial(target)
            await until(lambda: target.connected_to(honest), "the honest session")
            vandal = await RawPeer.connect(
                net.keys[2], target.node.chain.chain_id, target.port, "127.0.0.4"
            )
            await until(lambda: vandal.established, "the vandal's session")
            garbage = b"\xc1" * 8  # 0xc1 is never used in msgpack
            vandal.session._plain_out += len(garbage).to_bytes(4, "big") + garbage
            vandal._flush()
            await until(lambda: vandal.closed, "the vandal cut off")
            manager = target.node.peer_manager
            ip = net_address("127.0.0.4", 0).ip
            await until(lambda: manager.bans.is_discouraged(ip, time.time()), "discouraged")
            assert not manager.bans.is_discouraged(net_address("127.0.0.2", 0).ip, time.time())
            assert target.connected_to(honest)
        finally:
            await fleet.stop()

    run(scenario)

"""Secure sessions over real TCP on 127.0.0.1: nodes, relay, floods, outsiders.

Every wait is on a condition with a generous deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from loops import Runner

from meshchain.cli.setup import COIN, make_genesis
from meshchain.core.chain.genesis import ChainMode, Genesis
from meshchain.core.chain.tx import TxBody, sign_transaction
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import NodeStarted, TransactionSubmitted
from meshchain.core.node import Node, NodeConfig
from meshchain.core.store import MemoryStore
from meshchain.core.transport.identity import new_noise_static_key
from meshchain.core.transport.session import (
    PROTOCOL_VERSION,
    AdmissionPolicy,
    LocalPeer,
    SecureSession,
    SessionTimeouts,
)
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import Hello, TransactionMessage
from meshchain.runtime.driver import NodeDriver
from meshchain.runtime.network import P2PConfig, P2PService

DEADLINE = 60.0
FAST = SessionTimeouts(handshake=1.0, ping_interval=0.05, inactivity=30.0)


async def until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = asyncio.get_running_loop().time() + deadline
    while not condition():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Network:
    genesis: Genesis
    authority: SecretKey
    wallet: SecretKey
    identities: list[SecretKey]


def network(members: int) -> Network:
    rng = random.Random(5)
    authority, wallet = SecretKey.generate(rng), SecretKey.generate(rng)
    identities = [SecretKey.generate(rng) for _ in range(members)]
    genesis = make_genesis(
        ChainMode.PRIVATE,
        chain_name="transport-test",
        validators=[authority],
        members=identities,
        allocations=[(address_from_public_key(wallet.public_key), 1_000 * COIN)],
        block_interval_ms=200,
    )
    return Network(genesis, authority, wallet, identities)


async def start_node(
    net: Network, index: int, *, validator: bool = False, timeouts: SessionTimeouts = FAST
) -> P2PService:
    node = Node(
        NodeConfig(net.genesis, net.authority if validator else None),
        MemoryStore(),
        random.Random(index),
    )
    driver = NodeDriver(node)
    members = frozenset(m.node_key for m in net.genesis.members)
    service = P2PService(
        driver,
        P2PConfig(
            identity=net.identities[index],
            noise_static=new_noise_static_key(),
            policy=AdmissionPolicy(node.chain.chain_id, members),
            listen_address="127.0.0.1:0",
            timeouts=timeouts,
        ),
    )
    await service.listen("127.0.0.1", 0)
    driver.feed(NodeStarted())
    return service


def port_of(service: P2PService) -> int:
    assert service._server is not None
    return int(service._server.sockets[0].getsockname()[1])


def test_two_nodes_handshake_ping_and_relay_a_transaction_and_blocks(run: Runner) -> None:
    net = network(2)

    async def scenario() -> None:
        producer = await start_node(net, 0, validator=True)
        follower = await start_node(net, 1)
        try:
            await follower.dial("127.0.0.1", port_of(producer))
            await until(
                lambda: len(producer.peers) == 1 and len(follower.peers) == 1,
                "both sides to establish the session",
            )
            assert set(follower.peers) == {net.identities[0].public_key.hex()}
            connection = follower.peers[net.identities[0].public_key.hex()]
            await until(
                lambda: connection.session is not None and connection.session.rtt is not None,
                "a pong",
            )
            body = TxBody(
                producer.driver.node.chain.chain_id,
                net.wallet.public_key,
                bytes(20),
                5 * COIN,
                10_000,
                0,
            )
            tx = sign_transaction(body, net.wallet)
            follower.driver.feed(TransactionSubmitted(encode(tx)))
            await until(lambda: len(producer.driver.node.mempool) == 1, "relay to the producer")
            await until(lambda: follower.driver.node.chain.height >= 2, "blocks to reach us")
            assert follower.driver.node.chain.ledger.account_balance(bytes(20)) == 5 * COIN
            assert follower.driver.node.chain.tip_hash in {
                producer.driver.node.chain.hash_at(h)
                for h in range(producer.driver.node.chain.height + 1)
            }
        finally:
            for service in (producer, follower):
                service.driver.stop()
                await service.close()

    run(scenario)


async def garbage_peer(port: int, rng: random.Random) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(rng.randbytes(rng.randrange(1, 4_000)))
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), DEADLINE)  # until the node hangs up
    writer.close()
    return data


async def stalling_peer(port: int, send_first_bytes: bool) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if send_first_bytes:
        writer.write(b"\x00\x20" + bytes(7))  # a length prefix promising 32 bytes, then 7
        await writer.drain()
    data = await asyncio.wait_for(reader.read(), DEADLINE)
    writer.close()
    return data


def test_a_node_under_a_garbage_and_staller_flood_keeps_serving_an_honest_peer(run: Runner) -> None:
    net = network(2)
    patient = SessionTimeouts(handshake=3.0, ping_interval=0.05, inactivity=30.0)

    async def scenario() -> None:
        target = await start_node(net, 0, timeouts=patient)
        honest = await start_node(net, 1)
        try:
            await honest.dial("127.0.0.1", port_of(target))
            await until(lambda: len(honest.peers) == 1, "the honest session")
            session = next(iter(honest.peers.values())).session
            assert session is not None
            rng = random.Random(9)
            attackers = [garbage_peer(port_of(target), rng) for _ in range(25)]
            attackers += [stalling_peer(port_of(target), i % 2 == 0) for i in range(25)]
            attack = asyncio.gather(*attackers)
            await until(lambda: len(target.connections) >= 26, "the stallers to connect")
            pongs = session.pongs_received
            await until(lambda: session.pongs_received >= pongs + 5, "pongs during the attack")
            assert len(target.connections) > 1  # the stallers were still connected meanwhile
            replies = await attack  # every attacker was hung up on (garbage or timeout)
            assert len(replies) == 50
            await until(lambda: len(target.connections) == 1, "attackers to be dropped")
            assert len(honest.peers) == 1
            assert not session.closed
        finally:
            for service in (target, honest):
                service.driver.stop()
                await service.close()

    run(scenario)


def test_a_non_member_gets_nothing_past_the_handshake(run: Runner) -> None:
    net = network(2)

    async def scenario() -> None:
        member = await start_node(net, 0)
        try:
            outsider = SecretKey.generate(random.Random(77))
            chain_id = member.driver.node.chain.chain_id
            hello = Hello(
                PROTOCOL_VERSION, chain_id, outsider.public_key, "", 0, 0, bytes(32), "outsider/1"
            )
            session = SecureSession(
                LocalPeer(outsider, new_noise_static_key(), hello),
                AdmissionPolicy(chain_id, None),
                initiator=True,
                now=0.0,
                rng=random.Random(1),
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(member))
            writer.write(session.data_to_send())  # message 1
            length = int.from_bytes(await reader.readexactly(2), "big")
            session.receive_data(length.to_bytes(2, "big") + await reader.readexactly(length), 0.0)
            writer.write(session.data_to_send())  # message 3 and our hello
            await writer.drain()
            after_handshake = await asyncio.wait_for(reader.read(), DEADLINE)
            writer.close()
            assert after_handshake == b""  # the member hung up without one more byte
            assert member.peers == {}
        finally:
            member.driver.stop()
            await member.close()

    run(scenario)


def test_a_peer_that_stops_reading_is_dropped(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    import meshchain.runtime.network as network_module

    monkeypatch.setattr(network_module, "MAX_SEND_BUFFER", 256 * 1024)
    net = network(2)

    async def scenario() -> None:
        sender = await start_node(net, 0)
        lazy = await start_node(net, 1)
        try:
            connection = await lazy.dial("127.0.0.1", port_of(sender))
            await until(lambda: len(sender.peers) == 1, "the session")
            assert connection._transport is not None
            connection._transport.pause_reading()  # the lazy side stops reading
            peer = next(iter(sender.peers))
            body = TxBody(
                sender.driver.node.chain.chain_id,
                net.wallet.public_key,
                bytes(20),
                1,
                10_000,
                0,
                bytes(256),
            )
            message = TransactionMessage(sign_transaction(body, net.wallet))
            for _ in range(200):  # ~100 KB per round, far past what the kernel buffers
                for _ in range(250):
                    sender.send(peer, message)
                await asyncio.sleep(0)
                if not sender.peers:
                    break
            await until(lambda: not sender.peers, "the non-reader to be dropped")
        finally:
            for service in (sender, lazy):
                service.driver.stop()
                await service.close()

    run(scenario)

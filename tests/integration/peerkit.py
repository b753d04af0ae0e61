"""Helpers for peer-management tests over real TCP: in-process nodes that record what
their core was fed and did, fixed listen seats on 127.0.0.x, and a raw peer speaking
the transport by hand (what test_peers.py drives)."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from meshchain.cli.setup import COIN, make_genesis
from meshchain.core.chain.genesis import ChainMode, Genesis
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import Action, Dial, DialFailed, Input, NodeStarted, PeerDisconnected
from meshchain.core.node import Node, NodeConfig
from meshchain.core.peers.address import NetAddress, net_address
from meshchain.core.peers.config import PeerConfig, PersistentPeer
from meshchain.core.relay.config import RelayConfig
from meshchain.core.store import ChainStore, MemoryStore
from meshchain.core.transport.identity import new_noise_static_key
from meshchain.core.transport.session import (
    PROTOCOL_VERSION,
    AdmissionPolicy,
    LocalPeer,
    MessageArrived,
    SecureSession,
    SessionClosed,
    SessionEstablished,
    SessionTimeouts,
)
from meshchain.core.wire.messages import (
    MAX_ADDR_PER_MESSAGE,
    Addr,
    AddrEntry,
    AnyMessage,
    BlockMessage,
    GetBlock,
    Hello,
    Message,
)
from meshchain.runtime.driver import NodeDriver
from meshchain.runtime.network import MAX_CONNECTIONS, P2PConfig, P2PService

DEADLINE = 30.0
# Sessions that ping often: a test sees at once whether a node still answers.
FAST = SessionTimeouts(handshake=5.0, ping_interval=0.1, inactivity=60.0)
# Sessions that never ping in a test's time: a node then knows no peer's ping time, and
# eviction decides by groups and age alone, so its victim is known in advance.
QUIET = SessionTimeouts(handshake=5.0, ping_interval=600.0, inactivity=600.0, first_ping=600.0)
TARGET = "127.0.0.1"


async def until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# --- nodes ------------------------------------------------------------------------------


@dataclass
class Net:
    genesis: Genesis
    wallet: SecretKey
    keys: list[SecretKey]  # node identities, in order; all are members of the genesis
    authority: SecretKey  # the chain's one block signer


def network(nodes: int, seed: int) -> Net:
    rng = random.Random(seed)
    authority, wallet = SecretKey.generate(rng), SecretKey.generate(rng)
    keys = [SecretKey.generate(rng) for _ in range(nodes)]
    genesis = make_genesis(
        ChainMode.PRIVATE,
        chain_name="peers-test",
        validators=[authority],
        members=keys,
        allocations=[(address_from_public_key(wallet.public_key), 1_000 * COIN)],
    )
    return Net(genesis, wallet, keys, authority)


class Recorder(NodeDriver):
    """Keeps what the node was fed and asked to do, timed, and the most peers it held."""

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.inputs: list[tuple[float, Input]] = []
        self.actions: list[tuple[float, Action]] = []
        self.peak_peers = 0
        self.observers.append(lambda action: self.actions.append((time.monotonic(), action)))

    def feed(self, event: Input) -> list[Action]:
        self.inputs.append((time.monotonic(), event))
        actions = super().feed(event)
        held = len(self.transport.peers) if isinstance(self.transport, P2PService) else 0
        self.peak_peers = max(self.peak_peers, held, len(self.node.peers))
        return actions

    def dials(self, address: NetAddress) -> list[float]:
        return [t for t, a in self.actions if isinstance(a, Dial) and a.address == address]

    def failures(self, address: NetAddress) -> list[float]:
        return [t for t, e in self.inputs if isinstance(e, DialFailed) and e.address == address]

    def departures(self, peer: str) -> list[float]:
        return [t for t, e in self.inputs if isinstance(e, PeerDisconnected) and e.peer == peer]


@dataclass
class LiveNode:
    service: P2PService
    driver: Recorder
    key: SecretKey
    host: str  # where it listens, and dials from
    stopped: bool = False

    @property
    def node(self) -> Node:
        return self.driver.node

    @property
    def id(self) -> str:
        return self.key.public_key.hex()

    @property
    def port(self) -> int:
        assert self.service._server is not None
        return int(self.service._server.sockets[0].getsockname()[1])

    def connected_to(self, other: LiveNode) -> bool:
        return other.id in self.service.peers

    def session_with(self, other: LiveNode) -> SecureSession:
        session = self.service.peers[other.id].session
        assert session is not None
        return session

    async def dial(self, other: LiveNode) -> None:
        await self.service.dial(other.host, other.port)

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.driver.stop()
            await self.service.close()


async def start(
    net: Net,
    index: int,
    *,
    peers: PeerConfig | None = None,
    host: str = TARGET,
    port: int | None = 0,
    store: ChainStore | None = None,
    timeouts: SessionTimeouts = FAST,
    members: frozenset[bytes] | None = None,
    started: bool = True,
    max_connections: int = MAX_CONNECTIONS,
    validator: bool = False,
    relay: RelayConfig | None = None,
) -> LiveNode:
    """A node with identity `net.keys[index]`, dialling from `host`; it listens on
    `host:port` unless `port` is None."""
    key = net.keys[index]
    config = peers or PeerConfig(discovery=False)
    node = Node(
        NodeConfig(
            net.genesis,
            net.authority if validator else None,
            peers=replace(config, node_id=key.public_key),
            relay=relay or RelayConfig(),
        ),
        store or MemoryStore(),
        random.Random(index),
    )
    driver = Recorder(node)
    listen = f"{host}:{port}" if port else ""
    service = P2PService(
        driver,
        P2PConfig(
            identity=key,
            noise_static=new_noise_static_key(),
            policy=AdmissionPolicy(node.chain.chain_id, members),
            listen_address=listen,
            timeouts=timeouts,
            source_address=host,
            max_connections=max_connections,
        ),
        random.Random(index),
    )
    if port is not None:
        await service.listen(host, port)
    if started:
        driver.feed(NodeStarted())
    return LiveNode(service, driver, key, host)


class Fleet:
    """The nodes a scenario starts, all stopped at its end."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.nodes: list[LiveNode] = []

    async def start(self, index: int, **options: Any) -> LiveNode:
        live = await start(self.net, index, **options)
        self.nodes.append(live)
        return live

    async def stop(self) -> None:
        for live in self.nodes:
            await live.stop()


@dataclass
class Seats:
    """Listen addresses fixed in advance (a loopback IP each) for nodes that name each
    other in their configuration."""

    hosts: list[str]
    ports: list[int]

    @classmethod
    def take(cls, first: int, count: int) -> Seats:
        hosts = [f"127.0.0.{first + i}" for i in range(count)]
        ports = []
        for host in hosts:
            with socket.socket() as probe:
                probe.bind((host, 0))
                ports.append(int(probe.getsockname()[1]))
        return cls(hosts, ports)

    def __getitem__(self, index: int) -> NetAddress:
        return net_address(self.hosts[index], self.ports[index])

    async def start(
        self,
        fleet: Fleet,
        index: int,
        *persistent: int,
        members: frozenset[bytes] | None,
        **options: Any,
    ) -> LiveNode:
        """Node `index` in its seat, keeping the nodes `persistent` connected."""
        keys = fleet.net.keys
        config = PeerConfig(
            listen=self[index],
            persistent=tuple(PersistentPeer(self[p], keys[p].public_key) for p in persistent),
            members=members,
        )
        host, port = self.hosts[index], self.ports[index]
        return await fleet.start(
            index, peers=config, host=host, port=port, members=members, **options
        )


class RawPeer:
    """A peer that speaks the real transport by hand (Noise, hello, pongs) and sends only
    what the test tells it to: floods no node would send, or nothing at all."""

    def __init__(
        self,
        key: SecretKey,
        chain_id: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        initiator: bool,
    ) -> None:
        hello = Hello(PROTOCOL_VERSION, chain_id, key.public_key, "", 0, 0, bytes(32), "raw/1")
        self.session = SecureSession(
            LocalPeer(key, new_noise_static_key(), hello),
            AdmissionPolicy(chain_id, None),
            initiator=initiator,
            now=time.monotonic(),
            rng=random.Random(0),
            timeouts=QUIET,
        )
        self.id = key.public_key.hex()
        self.reader, self.writer = reader, writer
        self.received: list[Message] = []
        self.established = False
        self.close_reason = ""
        self.task = asyncio.create_task(self._run())

    @classmethod
    async def connect(cls, key: SecretKey, chain_id: bytes, port: int, source: str) -> RawPeer:
        reader, writer = await asyncio.open_connection(TARGET, port, local_addr=(source, 0))
        return cls(key, chain_id, reader, writer, initiator=True)

    @property
    def closed(self) -> bool:
        return self.task.done()

    def send(self, *messages: AnyMessage) -> None:
        for message in messages:
            self.session.send(message)
        self._flush()

    async def round_trip(self, genesis_hash: bytes) -> None:
        """Ask for the genesis block and wait for it: the node has then handled everything
        sent before (a session delivers messages in order)."""
        blocks = self.count(BlockMessage)
        self.send(GetBlock(genesis_hash))
        await until(lambda: self.count(BlockMessage) > blocks, "a round trip")

    def count(self, kind: type) -> int:
        return sum(1 for message in self.received if isinstance(message, kind))

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def _take_events(self) -> None:
        for event in self.session.events():
            if isinstance(event, SessionEstablished):
                self.established = True
            elif isinstance(event, MessageArrived):
                self.received.append(event.message)
            elif isinstance(event, SessionClosed):
                self.close_reason = event.reason

    async def _run(self) -> None:
        try:
            while not self.session.closed:
                self._flush()
                data = await self.reader.read(256 * 1024)
                if data:
                    self.session.receive_data(data, time.monotonic())
                else:
                    self.session.receive_eof()
                self._take_events()
        except OSError:  # reset by the node
            self.session.receive_eof()
        finally:
            self._take_events()
            self._flush()
            self.writer.close()


def fresh_addresses(rng: random.Random, count: int = MAX_ADDR_PER_MESSAGE) -> Addr:
    """Usable public addresses (11.0.0.0-99.255.255.255) seen just now."""
    now = int(time.time())
    entries = [
        AddrEntry(NetAddress(bytes([rng.randrange(11, 100), *rng.randbytes(3)]), 8333), b"", 0, now)
        for _ in range(count)
    ]
    return Addr(entries)

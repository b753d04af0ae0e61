"""A BFT network driven by hand: real nodes, a virtual clock, messages delivered in order
after a fixed delay unless a test holds or drops them. Shared by the BFT node tests."""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from meshchain.cli.setup import make_genesis
from meshchain.core.chain.genesis import ChainMode, Genesis
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import (
    Action,
    ConnectionKind,
    MessageReceived,
    NodeStarted,
    PeerConnected,
    PeerDisconnected,
    ScheduleTimer,
    Send,
    TimerFired,
)
from meshchain.core.node import Node, NodeConfig
from meshchain.core.peers.address import NetAddress
from meshchain.core.peers.config import PeerConfig
from meshchain.core.store import MemoryStore
from meshchain.core.wire.messages import AnyMessage

DELAY = 0.01  # seconds each message takes
FUNDS = 10**12

Filter = Callable[[int, int, AnyMessage], bool]  # (src, dst, message) -> deliver?


def bft_genesis(
    validators: list[SecretKey], nodes: list[SecretKey], wallets: list[SecretKey]
) -> Genesis:
    return make_genesis(
        ChainMode.CONSORTIUM,
        chain_name="bft-unit",
        validators=validators,
        members=nodes,
        allocations=[(address_from_public_key(w.public_key), FUNDS) for w in wallets],
        timestamp_ms=0,
        bft_timeouts_ms=(1_000, 500, 200),
    )


@dataclass
class BftNet:
    validators: int = 4
    observers: int = 0
    seed: int = 1
    now: float = 1.0
    filter: Filter | None = None
    actions: list[list[Action]] = field(default_factory=list)  # every action, per node

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        count = self.validators + self.observers
        self.validator_keys = [SecretKey.generate(rng) for _ in range(self.validators)]
        self.node_keys = [SecretKey.generate(rng) for _ in range(count)]
        self.wallets = [SecretKey.generate(rng) for _ in range(4)]
        self.genesis = bft_genesis(self.validator_keys, self.node_keys, self.wallets)
        self.stores = [MemoryStore() for _ in range(count)]
        self.nodes: list[Node | None] = [None] * count
        self.actions = [[] for _ in range(count)]
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._timer_versions: dict[tuple[int, str], int] = {}
        self.links: set[tuple[int, int]] = set()
        for index in range(count):
            self.start(index)
        for a in range(count):
            for b in range(a + 1, count):
                self.connect(a, b)

    def config(self, index: int) -> NodeConfig:
        key = self.validator_keys[index] if index < self.validators else None
        return NodeConfig(self.genesis, key, peers=PeerConfig(discovery=False))

    def start(self, index: int) -> Node:
        node = Node(self.config(index), self.stores[index], random.Random(self.seed * 100 + index))
        self.nodes[index] = node
        self._execute(index, node.handle(NodeStarted(), self.now))
        return node

    def node(self, index: int) -> Node:
        node = self.nodes[index]
        assert node is not None, f"node {index} is down"
        return node

    def crash(self, index: int) -> None:
        """The process dies: its store stays, its timers and links go."""
        self.nodes[index] = None
        for key in self._timer_versions:
            if key[0] == index:
                self._timer_versions[key] += 1
        for a, b in sorted(self.links):
            if index in (a, b):
                self.disconnect(a, b)

    def _address(self, index: int) -> NetAddress:
        return NetAddress(bytes([10, 0, 0, index + 1]), 26656)

    def connect(self, a: int, b: int) -> None:
        self.links.add((min(a, b), max(a, b)))
        for me, other, outbound in ((a, b, True), (b, a, False)):
            kind = ConnectionKind.PERSISTENT if outbound else ConnectionKind.INBOUND
            event = PeerConnected(
                str(other),
                outbound,
                self.node_keys[other].public_key,
                self._address(other),
                self._address(other),
                kind,
            )
            self._execute(me, self.node(me).handle(event, self.now))

    def disconnect(self, a: int, b: int) -> None:
        self.links.discard((min(a, b), max(a, b)))
        for me, other in ((a, b), (b, a)):
            node = self.nodes[me]
            if node is not None:
                self._execute(me, node.handle(PeerDisconnected(str(other), "test"), self.now))

    def _execute(self, index: int, actions: list[Action]) -> None:
        self.actions[index].extend(actions)
        for action in actions:
            if isinstance(action, Send):
                self._send(index, int(action.peer), action.message)
            elif isinstance(action, ScheduleTimer):
                key = (index, action.timer)
                version = self._timer_versions.get(key, 0) + 1
                self._timer_versions[key] = version
                self._at(action.at, functools.partial(self._fire, index, action.timer, version))

    def _send(self, src: int, dst: int, message: AnyMessage) -> None:
        if self.filter is not None and not self.filter(src, dst, message):
            return

        def deliver() -> None:
            node = self.nodes[dst]
            if node is None or (min(src, dst), max(src, dst)) not in self.links:
                return
            event = MessageReceived(str(src), message, 100)  # type: ignore[arg-type]
            self._execute(dst, node.handle(event, self.now))

        self._at(self.now + DELAY, deliver)

    def _fire(self, index: int, timer: str, version: int) -> None:
        node = self.nodes[index]
        if node is not None and self._timer_versions.get((index, timer)) == version:
            self._execute(index, node.handle(TimerFired(timer), self.now))

    def _at(self, when: float, call: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (max(when, self.now), next(self._order), call))

    def run_until(self, end: float) -> None:
        while self._queue and self._queue[0][0] <= end:
            when, _, call = heapq.heappop(self._queue)
            self.now = when
            call()
        self.now = max(self.now, end)

    def run_until_height(self, height: int, indexes: list[int], limit: float = 120.0) -> None:
        deadline = self.now + limit
        while not all(self.node(i).chain.height >= height for i in indexes):
            assert self._queue, "nothing left to happen"
            assert self._queue[0][0] <= deadline, "no progress"
            when, _, call = heapq.heappop(self._queue)
            self.now = when
            call()

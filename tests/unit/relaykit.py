"""Nodes in announce-then-fetch mode driven by hand: peers connected without a network,
messages handed in, actions looked at. Shared by the relay unit tests."""

from __future__ import annotations

import random
from typing import TypeVar

from meshchain.chainkit import ChainKit
from meshchain.core.chain.tx import Transaction
from meshchain.core.events import (
    Action,
    ConnectionKind,
    MessageReceived,
    NodeStarted,
    PeerConnected,
    ScheduleTimer,
    Send,
    TimerFired,
)
from meshchain.core.node import Node, NodeConfig
from meshchain.core.peers.address import NetAddress
from meshchain.core.peers.config import PeerConfig
from meshchain.core.relay.config import RelayConfig
from meshchain.core.store import MemoryStore
from meshchain.core.wire.messages import AnyMessage

KIT = ChainKit(seed=21, accounts=6)
T0 = KIT.genesis.timestamp_ms / 1000
A = TypeVar("A")


def make_node(relay: RelayConfig | None = None, validator: bool = False, seed: int = 1) -> Node:
    config = NodeConfig(
        KIT.genesis,
        KIT.authority if validator else None,
        peers=PeerConfig(discovery=False),
        relay=relay or RelayConfig(),
    )
    node = Node(config, MemoryStore(), random.Random(seed))
    node.handle(NodeStarted(), T0)
    return node


def connect(node: Node, peer: str, kind: ConnectionKind, now: float = T0) -> list[Action]:
    number = sum(peer.encode()) % 250 + 1
    address = NetAddress(bytes([10, number, 0, 1]), 26656)
    outbound = kind is not ConnectionKind.INBOUND
    event = PeerConnected(peer, outbound, bytes([number]) * 32, address, address, kind)
    return node.handle(event, now)


def receive(node: Node, peer: str, message: AnyMessage, now: float = T0) -> list[Action]:
    return node.handle(MessageReceived(peer, message, 100), now)  # type: ignore[arg-type]


def fire(node: Node, timer: str, now: float) -> list[Action]:
    return node.handle(TimerFired(timer), now)


def of_type(actions: list[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def sends(actions: list[Action], kind: type[A]) -> list[tuple[str, A]]:
    """(peer, message) for each Send of a message of `kind`."""
    return [(a.peer, a.message) for a in of_type(actions, Send) if isinstance(a.message, kind)]


def timers(actions: list[Action]) -> dict[str, float]:
    return {a.timer: a.at for a in of_type(actions, ScheduleTimer)}


def transfer(node: Node, sender: int = 0, nonce: int = 0, amount: int = 5) -> Transaction:
    return KIT.transfer(node.chain.chain_id, sender, sender + 1, amount, 500, nonce)

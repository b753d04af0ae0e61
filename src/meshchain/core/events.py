"""Inputs to `Node.handle` (past tense: what happened) and its outputs.

Actions are imperative (what the driver must do); notices are past tense (what the node
did, for logs, metrics and API subscribers). Drivers — the asyncio runtime and the
simulator — execute exactly these and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshchain.core.wire.messages import Message
from meshchain.errors import RejectCode

PeerId = str  # the driver's name for a connection; the transport issue makes it a node id


# --- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeStarted:
    """The driver is ready; the node arms its timers."""


@dataclass(frozen=True, slots=True)
class PeerConnected:
    peer: PeerId
    outbound: bool


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    peer: PeerId
    reason: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    peer: PeerId
    message: Message
    size: int  # encoded bytes, for accounting


@dataclass(frozen=True, slots=True)
class TransactionSubmitted:
    """A transaction from a local user (wallet, API), as canonical bytes."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: str


Input = (
    NodeStarted
    | PeerConnected
    | PeerDisconnected
    | MessageReceived
    | TransactionSubmitted
    | (TimerFired)
)


# --- actions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    peer: PeerId
    message: Message


@dataclass(frozen=True, slots=True)
class Disconnect:
    peer: PeerId
    reason: str


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    """Fire `TimerFired(timer)` at `at`; scheduling a timer again replaces it."""

    timer: str
    at: float


# --- notices --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockAccepted:
    block_hash: bytes
    height: int
    tx_count: int
    produced: bool  # made by this node


@dataclass(frozen=True, slots=True)
class BlockRejected:
    block_hash: bytes
    code: RejectCode
    detail: str
    peer: PeerId | None


@dataclass(frozen=True, slots=True)
class TransactionAccepted:
    txid: bytes


@dataclass(frozen=True, slots=True)
class TransactionRejected:
    txid: bytes | None
    code: RejectCode
    detail: str
    peer: PeerId | None


@dataclass(frozen=True, slots=True)
class ChainReorganized:
    old_tip: bytes
    new_tip: bytes
    disconnected: int
    connected: int


Notice = (
    BlockAccepted | BlockRejected | TransactionAccepted | TransactionRejected | (ChainReorganized)
)
Action = Send | Disconnect | ScheduleTimer | Notice

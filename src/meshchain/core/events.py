"""Inputs to `Node.handle` (past tense: what happened) and its outputs.

Actions are imperative (what the driver must do); notices are past tense (what the node
did, for logs, metrics and API subscribers). Drivers — the asyncio runtime and the
simulator — execute exactly these and nothing else.

They are frozen msgspec Structs rather than frozen dataclasses: one is built for every
message a node receives and every message it sends, and a Struct is built in a sixth of
the time (a frozen dataclass sets each field through `object.__setattr__`).
"""

from __future__ import annotations

import enum

import msgspec

from meshchain.core.chain.block import Block
from meshchain.core.peers.address import NetAddress
from meshchain.core.wire.messages import Message
from meshchain.errors import RejectCode

PeerId = str  # the driver's name for a connection: the node id in hex (an index in the sim)


class ConnectionKind(enum.Enum):
    """Why a connection exists; it decides what is relayed on it and how it is counted.

    As in Bitcoin Core: full-relay outbound peers get everything; block-relay-only ones
    get blocks and no transactions or addresses (they are hard to detect, which guards
    against eclipse and partition attacks); feelers test an address and hang up;
    persistent peers (configured, or consortium members) are always redialled.
    """

    INBOUND = "inbound"
    FULL_RELAY = "full-relay"
    BLOCK_RELAY = "block-relay"
    FEELER = "feeler"
    PERSISTENT = "persistent"


# --- inputs ---------------------------------------------------------------------------


class NodeStarted(msgspec.Struct, frozen=True):
    """The driver is ready; the node arms its timers."""


class PeerConnected(msgspec.Struct, frozen=True):
    """A session is open (handshake and hellos done)."""

    peer: PeerId
    outbound: bool
    node_id: bytes = b""  # the authenticated identity key
    address: NetAddress | None = None  # the remote end of the connection
    listen: NetAddress | None = None  # where the peer says it accepts connections
    kind: ConnectionKind | None = None  # outbound: what we dialled it as; None: derived
    best_height: int = 0  # the height of the peer's best chain, as its hello said

    @property
    def connection_kind(self) -> ConnectionKind:
        if self.kind is not None:
            return self.kind
        return ConnectionKind.FULL_RELAY if self.outbound else ConnectionKind.INBOUND


class PeerDisconnected(msgspec.Struct, frozen=True):
    peer: PeerId
    reason: str


class MessageReceived(msgspec.Struct, frozen=True):
    peer: PeerId
    message: Message
    size: int  # encoded bytes, for accounting


class TransactionSubmitted(msgspec.Struct, frozen=True):
    """A transaction from a local user (wallet, API), as canonical bytes."""

    raw: bytes


class TimerFired(msgspec.Struct, frozen=True):
    timer: str


class DialFailed(msgspec.Struct, frozen=True):
    """A `Dial` did not produce a session (refused, timed out, handshake failed)."""

    address: NetAddress
    reason: str


class PingMeasured(msgspec.Struct, frozen=True):
    peer: PeerId
    rtt: float  # seconds


class SessionViolation(msgspec.Struct, frozen=True):
    """The transport ended a session over bad bytes (undecodable, oversized, tampered or
    out-of-turn data): the node charges the remote IP per its offence table."""

    address: NetAddress
    reason: str


class NodeStopping(msgspec.Struct, frozen=True):
    """The driver is shutting down: the node saves what it keeps across restarts."""


class BlockMined(msgspec.Struct, frozen=True):
    """The driver's miner found the proof of work for a `MineBlock` template."""

    block: Block


Input = (
    NodeStarted
    | PeerConnected
    | PeerDisconnected
    | MessageReceived
    | TransactionSubmitted
    | TimerFired
    | DialFailed
    | PingMeasured
    | SessionViolation
    | BlockMined
    | (NodeStopping)
)


# --- actions --------------------------------------------------------------------------


class Send(msgspec.Struct, frozen=True):
    peer: PeerId
    message: Message


class Disconnect(msgspec.Struct, frozen=True):
    peer: PeerId
    reason: str


class Dial(msgspec.Struct, frozen=True):
    """Open an outbound connection; the driver answers `PeerConnected` or `DialFailed`."""

    address: NetAddress
    kind: ConnectionKind
    node_id: bytes | None = None  # the identity expected there, when known


class ScheduleTimer(msgspec.Struct, frozen=True):
    """Fire `TimerFired(timer)` at `at`; scheduling a timer again replaces it."""

    timer: str
    at: float


# --- notices --------------------------------------------------------------------------


class BlockAccepted(msgspec.Struct, frozen=True):
    block_hash: bytes
    height: int
    tx_count: int
    produced: bool  # made by this node


class BlockRejected(msgspec.Struct, frozen=True):
    block_hash: bytes
    code: RejectCode
    detail: str
    peer: PeerId | None


class TransactionAccepted(msgspec.Struct, frozen=True):
    """The transaction entered this node's mempool (it is public: fluffed or flooded)."""

    txid: bytes


class TransactionStemmed(msgspec.Struct, frozen=True):
    """A valid stem transaction went on to one Dandelion++ relay, not to the mempool."""

    txid: bytes
    relay: PeerId


class TransactionRejected(msgspec.Struct, frozen=True):
    txid: bytes | None
    code: RejectCode
    detail: str
    peer: PeerId | None


class ChainReorganized(msgspec.Struct, frozen=True):
    old_tip: bytes
    new_tip: bytes
    disconnected: int
    connected: int


class PeerPunished(msgspec.Struct, frozen=True):
    """A peer misbehaved: what it did and what it cost it (disconnect, discourage, ban)."""

    peer: PeerId
    offence: str
    penalty: str
    until: float | None  # end of a discouragement or ban


class EquivocationDetected(msgspec.Struct, frozen=True):
    """A validator signed two different votes for one height, round and step: the
    evidence is gossiped and goes into a block."""

    validator: bytes
    height: int
    round: int
    kind: int  # 1 prevote, 2 precommit


class VoteSigned(msgspec.Struct, frozen=True):
    """We signed a proposal or vote (written to the write-ahead log first): an audit
    trail, logged at debug level."""

    height: int
    round: int
    step: str  # "proposal", "prevote" or "precommit"
    value: bytes  # the block hash; empty for nil


class DoubleSignRefused(msgspec.Struct, frozen=True):
    """Our consensus wanted a second, different signature for a slot the write-ahead log
    says we signed already (a restart lost state): refused, nothing was sent."""

    height: int
    round: int
    step: str


class SyncProgress(msgspec.Struct, frozen=True):
    """Sync is downloading blocks toward a better header chain (at most once a second)."""

    height: int  # our tip
    target_height: int  # the last block sync will fetch
    blocks_per_second: float
    eta_seconds: float | None  # None until a rate is known


class SyncFinished(msgspec.Struct, frozen=True):
    """Sync connected every block of the best header chain it knew of."""

    height: int
    blocks: int  # connected since the sync began
    seconds: float


Notice = (
    BlockAccepted
    | BlockRejected
    | TransactionAccepted
    | TransactionStemmed
    | TransactionRejected
    | ChainReorganized
    | PeerPunished
    | SyncProgress
    | SyncFinished
    | EquivocationDetected
    | DoubleSignRefused
    | VoteSigned
)


class MineBlock(msgspec.Struct, frozen=True):
    """Search for a proof-of-work nonce for this template, off the event loop, and feed
    back `BlockMined`; a newer MineBlock replaces the search (the tip moved on)."""

    block: Block


Action = Send | Disconnect | Dial | ScheduleTimer | MineBlock | Notice

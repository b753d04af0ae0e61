"""Peer-to-peer messages: a msgpack array whose first element is the message type id.

Type ids are stable wire constants (docs/protocol.md lists them): 1-15 belong to the
session (hello, goodbye, ping, pong), 16 and up to the chain protocols (30-34: sync).
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from meshchain.core.chain.block import MAX_BLOCK_TXS, Block, BlockHeader
from meshchain.core.chain.tx import Transaction
from meshchain.core.consensus.bftwire import Commit, DuplicateVote, SignedProposal, SignedVote
from meshchain.core.peers.address import NetAddress
from meshchain.core.wire.codec import (
    MAX_MESSAGE_SIZE,
    Codec,
    Hash32,
    PublicKey32,
    UInt,
    UInt16,
    WireStruct,
)

# Bitcoin's MAX_SUBVERSION_LENGTH (src/net_processing.cpp).
MAX_USER_AGENT_LENGTH = 256
# "host:port" with an IPv6 host in brackets fits easily.
MAX_LISTEN_ADDRESS_LENGTH = 64
MAX_GOODBYE_REASON_LENGTH = 256
# Bitcoin's MAX_ADDR_TO_SEND: the most addresses one Addr message may carry.
MAX_ADDR_PER_MESSAGE = 1000
# Bitcoin's MAX_INV_SZ (net_processing.cpp): entries in one inv, getdata or notfound.
MAX_INV_ENTRIES = 50_000
# Ours: transactions in one Transactions or BlockTxn message. A transaction is at most
# MAX_TX_SIZE (512) bytes, so this many always fit in MAX_MESSAGE_SIZE.
MAX_TXS_PER_MESSAGE = 7_500
# BIP152: short transaction ids are 6 bytes.
SHORT_ID_LENGTH = 6
# Bitcoin's MAX_HEADERS_RESULTS (net_processing.h): headers in one Headers message.
MAX_HEADERS_RESULTS = 2_000
# Bitcoin's MAX_LOCATOR_SZ (net_processing.cpp): hashes in one block locator.
MAX_LOCATOR_SIZE = 101
# Bitcoin's MAX_BLOCKS_IN_TRANSIT_PER_PEER: the most blocks a syncing node has asked one
# peer for at a time, so the most one GetBlocks may name.
MAX_BLOCKS_PER_REQUEST = 16


class GoodbyeCode(enum.IntEnum):
    """Why a session is ended on purpose; sent in Goodbye so both sides can log it."""

    NORMAL = 0
    WRONG_CHAIN = 1
    INCOMPATIBLE_VERSION = 2
    BAD_HELLO = 3
    PROTOCOL_VIOLATION = 4
    DUPLICATE_CONNECTION = 5
    SELF_CONNECTION = 6
    TIMEOUT = 7
    MISBEHAVIOUR = 8
    SHUTTING_DOWN = 9


class Hello(WireStruct, frozen=True, tag=1):
    """The first application message each way: who we are and where our chain is."""

    protocol_version: UInt16
    chain_id: Hash32
    node_id: PublicKey32  # the identity key the handshake authenticated
    listen_address: Annotated[str, msgspec.Meta(max_length=MAX_LISTEN_ADDRESS_LENGTH)]
    services: UInt
    best_height: UInt
    best_hash: Hash32
    user_agent: Annotated[str, msgspec.Meta(max_length=MAX_USER_AGENT_LENGTH)]


class Goodbye(WireStruct, frozen=True, tag=2):
    """The last message before we close: the reason, for the peer's log."""

    code: UInt16
    reason: Annotated[str, msgspec.Meta(max_length=MAX_GOODBYE_REASON_LENGTH)]


class Ping(WireStruct, frozen=True, tag=3):
    nonce: UInt


class Pong(WireStruct, frozen=True, tag=4):
    nonce: UInt


class GetBlock(WireStruct, frozen=True, tag=18):
    """Ask a peer for one block by hash (the parent of an orphan it sent us)."""

    block_hash: Hash32


class AddrEntry(WireStruct, frozen=True):
    """One known peer: where it listens, who it is (if known) and when it was last seen."""

    address: NetAddress
    node_id: Annotated[bytes, msgspec.Meta(max_length=32)]  # 32 bytes, or empty: unknown
    services: UInt
    seen: UInt  # unix seconds


class GetAddr(WireStruct, frozen=True, tag=19):
    """Ask a peer for addresses it knows (answered once per connection)."""


class Addr(WireStruct, frozen=True, tag=20):
    """Addresses of peers: an answer to GetAddr, or a node's own listen address."""

    entries: Annotated[list[AddrEntry], msgspec.Meta(max_length=MAX_ADDR_PER_MESSAGE)]


class TransactionMessage(WireStruct, frozen=True, tag=16):
    """One transaction, relayed (flood relay until announce-then-fetch arrives)."""

    transaction: Transaction


class BlockMessage(WireStruct, frozen=True, tag=17):
    """One whole block."""

    block: Block


class InvKind(enum.IntEnum):
    """What an inventory entry names, and what a GetData for it asks to receive."""

    TRANSACTION = 1  # answered with Transactions
    BLOCK = 2  # answered with BlockMessage (the whole block)
    COMPACT_BLOCK = 3  # answered with CompactBlock (BIP152's MSG_CMPCT_BLOCK)


InvHashes = Annotated[list[Hash32], msgspec.Meta(max_length=MAX_INV_ENTRIES)]


class Inventory(WireStruct, frozen=True, tag=21):
    """What we have: transaction ids (trickled) or block hashes (at once)."""

    kind: InvKind
    hashes: InvHashes


class GetData(WireStruct, frozen=True, tag=22):
    """Items to send us, from those the peer announced."""

    kind: InvKind
    hashes: InvHashes


class NotFound(WireStruct, frozen=True, tag=23):
    """Items asked for that we do not have (or may not serve): ask someone else."""

    kind: InvKind
    hashes: InvHashes


class Transactions(WireStruct, frozen=True, tag=24):
    """Transactions answering a GetData, several to a message."""

    transactions: Annotated[list[Transaction], msgspec.Meta(max_length=MAX_TXS_PER_MESSAGE)]


class StemTransaction(WireStruct, frozen=True, tag=25):
    """A Dandelion++ stem-phase transaction, pushed to this one peer only (BIP156's
    dandeliontx): never announced, and never served to anyone else until it fluffs."""

    transaction: Transaction


class SendCompact(WireStruct, frozen=True, tag=26):
    """BIP152 sendcmpct: whether to push us new blocks as CompactBlock unasked."""

    high_bandwidth: bool


ShortId = Annotated[bytes, msgspec.Meta(min_length=SHORT_ID_LENGTH, max_length=SHORT_ID_LENGTH)]


class PrefilledTransaction(WireStruct, frozen=True):
    index: UInt  # position in the block (absolute, not BIP152's differential form)
    transaction: Transaction


class CompactBlock(WireStruct, frozen=True, tag=27):
    """BIP152 cmpctblock: the header, a salt, and a short id per transaction; the
    receiver rebuilds the block from its mempool and asks only for what it lacks."""

    header: BlockHeader
    nonce: UInt  # with the header hash, keys the short ids of this message
    short_ids: Annotated[list[ShortId], msgspec.Meta(max_length=MAX_BLOCK_TXS)]
    prefilled: Annotated[list[PrefilledTransaction], msgspec.Meta(max_length=MAX_BLOCK_TXS)]


class GetBlockTxn(WireStruct, frozen=True, tag=28):
    """BIP152 getblocktxn: the transactions of a compact block we could not rebuild."""

    block_hash: Hash32
    indexes: Annotated[list[UInt], msgspec.Meta(max_length=MAX_BLOCK_TXS)]


class BlockTxn(WireStruct, frozen=True, tag=29):
    """BIP152 blocktxn: the transactions a GetBlockTxn asked for, in its order."""

    block_hash: Hash32
    transactions: Annotated[list[Transaction], msgspec.Meta(max_length=MAX_BLOCK_TXS)]


class GetHeaders(WireStruct, frozen=True, tag=30):
    """Headers of the sender's best chain after the first locator hash it has (Bitcoin's
    getheaders): up to MAX_HEADERS_RESULTS, ending early at `stop` (zero: no stop)."""

    locator: Annotated[list[Hash32], msgspec.Meta(max_length=MAX_LOCATOR_SIZE)]
    stop: Hash32


class Headers(WireStruct, frozen=True, tag=31):
    """The answer to GetHeaders: consecutive headers, parent first (empty: nothing new)."""

    headers: Annotated[list[BlockHeader], msgspec.Meta(max_length=MAX_HEADERS_RESULTS)]


class GetBlocks(WireStruct, frozen=True, tag=32):
    """Ask for whole blocks by hash while syncing; each comes back as a SyncBlock."""

    hashes: Annotated[list[Hash32], msgspec.Meta(min_length=1, max_length=MAX_BLOCKS_PER_REQUEST)]


class SyncBlock(WireStruct, frozen=True, tag=33):
    """One block answering GetBlocks, as the server stored it: the receiver decodes it
    with the block codec (so the server never decodes and re-encodes what it serves)."""

    block: msgspec.Raw


class BlocksNotFound(WireStruct, frozen=True, tag=34):
    """Blocks a GetBlocks asked for that the server does not have: ask someone else."""

    hashes: Annotated[list[Hash32], msgspec.Meta(max_length=MAX_BLOCKS_PER_REQUEST)]


class ProposalMessage(WireStruct, frozen=True, tag=40):
    """A BFT proposal: the round's proposer offers a whole block (gossiped by all)."""

    proposal: SignedProposal


class VoteMessage(WireStruct, frozen=True, tag=41):
    """A BFT prevote or precommit (gossiped by all)."""

    vote: SignedVote


class CommitMessage(WireStruct, frozen=True, tag=42):
    """A committed block with its commit certificate: helps a lagging peer catch up."""

    block: Block
    commit: Commit


class EvidenceMessage(WireStruct, frozen=True, tag=43):
    """Proof that a validator equivocated, gossiped until a block records it."""

    evidence: DuplicateVote


class ConsensusStatus(WireStruct, frozen=True, tag=44):
    """Where a node's consensus is (CometBFT's NewRoundStep): peers behind get commits."""

    height: UInt
    round: UInt


SessionMessage = Hello | Goodbye | Ping | Pong
Message = (
    TransactionMessage
    | BlockMessage
    | GetBlock
    | GetAddr
    | Addr
    | Inventory
    | GetData
    | NotFound
    | Transactions
    | StemTransaction
    | SendCompact
    | CompactBlock
    | GetBlockTxn
    | BlockTxn
    | GetHeaders
    | Headers
    | GetBlocks
    | SyncBlock
    | BlocksNotFound
    | ProposalMessage
    | VoteMessage
    | CommitMessage
    | EvidenceMessage
    | ConsensusStatus
)
AnyMessage = SessionMessage | Message

MESSAGE_CODEC: Codec[AnyMessage] = Codec(AnyMessage, MAX_MESSAGE_SIZE)  # type: ignore[arg-type]

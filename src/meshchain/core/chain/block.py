"""Blocks: a header that commits to the transactions and the resulting state, and a body.

`consensus` is the engine's slot (a PoA signature, a PoW nonce, a BFT commit); its
meaning belongs to the engine, its size bound to us. The block hash is a tagged hash of
the encoded header, so it commits to everything through the two roots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec

from meshchain.core.chain.tx import Transaction
from meshchain.core.crypto.hashing import tagged_hasher
from meshchain.core.crypto.merkle import leaf_hash, merkle_root
from meshchain.core.wire.codec import (
    MAX_MESSAGE_SIZE,
    Address20,
    Codec,
    Hash32,
    UInt,
    UInt16,
    WireStruct,
    encode,
)

BLOCK_VERSION = 1
# A block must fit in one protocol message (Bitcoin: 4,000,000 bytes).
MAX_BLOCK_SIZE = MAX_MESSAGE_SIZE
# The smallest transaction is ~170 bytes, so no valid block holds more than this.
MAX_BLOCK_TXS = 25_000
# Room for a BFT commit certificate of 100 validators (~100 B each) and more.
MAX_CONSENSUS_FIELD_SIZE = 65_536
ZERO_HASH = bytes(32)
NO_BENEFICIARY = bytes(20)

_block_hash = tagged_hasher("meshchain/block")
ConsensusField = Annotated[bytes, msgspec.Meta(max_length=MAX_CONSENSUS_FIELD_SIZE)]


class BlockHeader(WireStruct, frozen=True):
    version: UInt16
    chain_id: Hash32
    height: UInt
    parent: Hash32
    timestamp_ms: UInt
    tx_root: Hash32
    state_root: Hash32
    beneficiary: Address20  # receives the reward and the unburnt fees
    consensus: ConsensusField = b""


class Block(WireStruct, frozen=True):
    header: BlockHeader
    transactions: Annotated[list[Transaction], msgspec.Meta(max_length=MAX_BLOCK_TXS)]


BLOCK_CODEC: Codec[Block] = Codec(Block, MAX_BLOCK_SIZE)
HEADER_CODEC: Codec[BlockHeader] = Codec(BlockHeader, MAX_CONSENSUS_FIELD_SIZE + 1024)


def header_hash(header: BlockHeader) -> bytes:
    return _block_hash(encode(header))


def block_hash(block: Block) -> bytes:
    return header_hash(block.header)


def transactions_root(transactions: Sequence[Transaction]) -> bytes:
    return merkle_root([leaf_hash(encode(tx)) for tx in transactions])

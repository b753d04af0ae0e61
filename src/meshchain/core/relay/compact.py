"""Compact blocks (BIP152): a block sent as its header plus a 6-byte id per transaction.

The receiver already holds most of a new block's transactions in its mempool, so it
rebuilds the block from them and fetches only what it lacks (`GetBlockTxn`). Short ids
are keyed per message by the header hash and a random nonce (BIP152's salting), so an
attacker cannot grind transactions whose ids collide on every link. BIP152 keys
SipHash-2-4; we key BLAKE2b from the standard library (a keyed PRF as well, and no
extra dependency), truncated to the same 6 bytes. A collision, among our candidates or
in the message, makes us ask for the whole block, as BIP152 prescribes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from meshchain.core.chain.block import Block, header_hash, transactions_root
from meshchain.core.chain.tx import Transaction, txid_of
from meshchain.core.wire.messages import (
    SHORT_ID_LENGTH,
    BlockTxn,
    CompactBlock,
)

SHORT_ID_KEY_LENGTH = 16  # BIP152: the first 16 bytes of SHA256(header || nonce)


def short_id_key(block_hash: bytes, nonce: int) -> bytes:
    return hashlib.sha256(block_hash + nonce.to_bytes(8, "little")).digest()[:SHORT_ID_KEY_LENGTH]


def short_id(key: bytes, txid: bytes) -> bytes:
    return hashlib.blake2b(txid, key=key, digest_size=SHORT_ID_LENGTH).digest()


def compact_block(block: Block, nonce: int) -> CompactBlock:
    """The block as its header and short ids (nothing prefilled: we have no coinbase)."""
    key = short_id_key(header_hash(block.header), nonce)
    ids = [short_id(key, txid_of(tx)) for tx in block.transactions]
    return CompactBlock(block.header, nonce, ids, [])


class CompactBlockError(Exception):
    """A compact block that cannot be rebuilt from short ids: ask for the whole block."""


@dataclass(slots=True)
class PartialBlock:
    """A compact block being rebuilt: the slots we filled and the indexes still missing."""

    compact: CompactBlock
    block_hash: bytes
    slots: list[Transaction | None]
    missing: list[int]

    @classmethod
    def rebuild(cls, compact: CompactBlock, candidates: Iterable[Transaction]) -> PartialBlock:
        """Fill what the candidates (mempool, stempool) provide.

        Raises CompactBlockError for a message no honest sender builds: out-of-range or
        repeated prefilled indexes, or two equal short ids (BIP152: fall back).
        """
        block_hash = header_hash(compact.header)
        total = len(compact.short_ids) + len(compact.prefilled)
        slots: list[Transaction | None] = [None] * total
        for prefilled in compact.prefilled:
            if prefilled.index >= total or slots[prefilled.index] is not None:
                raise CompactBlockError("bad prefilled transaction index")
            slots[prefilled.index] = prefilled.transaction
        positions = [i for i, tx in enumerate(slots) if tx is None]
        wanted: dict[bytes, int] = {}
        for position, sid in zip(positions, compact.short_ids, strict=True):
            if sid in wanted:
                raise CompactBlockError("two transactions with one short id")
            wanted[sid] = position
        key = short_id_key(block_hash, compact.nonce)
        ambiguous: set[int] = set()
        for tx in candidates:
            found = wanted.get(short_id(key, txid_of(tx)))
            if found is None:
                continue
            if slots[found] is not None:
                ambiguous.add(found)  # two of ours share the id: ask for it instead
            slots[found] = tx
        for position in ambiguous:
            slots[position] = None
        missing = [i for i, tx in enumerate(slots) if tx is None]
        return cls(compact, block_hash, slots, missing)

    def fill(self, answer: BlockTxn) -> None:
        if len(answer.transactions) != len(self.missing):
            raise CompactBlockError("BlockTxn does not answer what we asked")
        for position, tx in zip(self.missing, answer.transactions, strict=True):
            self.slots[position] = tx
        self.missing = []

    def block(self) -> Block:
        """The whole block once nothing is missing; CompactBlockError if the short ids
        matched the wrong transactions (the transaction root shows it)."""
        if self.missing:
            raise CompactBlockError("transactions still missing")
        transactions = [tx for tx in self.slots if tx is not None]
        if transactions_root(transactions) != self.compact.header.tx_root:
            raise CompactBlockError("rebuilt transactions do not match the header")
        return Block(self.compact.header, transactions)


def block_transactions(block: Block, indexes: list[int]) -> list[Transaction] | None:
    """The transactions a GetBlockTxn asks for; None if an index is out of range."""
    txs = block.transactions
    if any(i >= len(txs) for i in indexes):
        return None
    return [txs[i] for i in indexes]

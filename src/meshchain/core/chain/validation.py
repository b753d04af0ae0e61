"""Checks that need no chain state: run them before storing or relaying anything.

Stateful rules (nonces, balances, the state root) are checked when a block is connected,
by `Ledger.apply_block` and `ChainState`.
"""

from __future__ import annotations

from meshchain.core.chain.block import (
    BLOCK_VERSION,
    MAX_BLOCK_SIZE,
    Block,
    BlockHeader,
    transactions_root,
)
from meshchain.core.chain.tx import Transaction, compute_txid
from meshchain.core.wire.codec import encode
from meshchain.errors import RejectCode, ValidationError


def check_transaction(tx: Transaction, chain_id: bytes) -> None:
    """Rules every transaction obeys wherever it is, signature aside."""
    body = tx.body
    if body.chain_id != chain_id:
        raise ValidationError(RejectCode.WRONG_CHAIN, f"chain id {body.chain_id.hex()[:16]}")
    if body.amount == 0 and body.fee == 0 and not body.data:
        raise ValidationError(RejectCode.MALFORMED, "transaction moves nothing and says nothing")


def check_header_fields(header: BlockHeader, chain_id: bytes) -> None:
    """Context-free header rules: the version we speak, and our chain."""
    if header.version != BLOCK_VERSION:
        raise ValidationError(RejectCode.BAD_VERSION, f"block version {header.version}")
    if header.chain_id != chain_id:
        raise ValidationError(RejectCode.WRONG_CHAIN, f"chain id {header.chain_id.hex()[:16]}")


def check_block(block: Block, chain_id: bytes, raw_size: int | None = None) -> None:
    """Context-free block rules: version, chain, size, Merkle root, no duplicate txs."""
    header = block.header
    check_header_fields(header, chain_id)
    size = raw_size if raw_size is not None else len(encode(block))
    if size > MAX_BLOCK_SIZE:
        raise ValidationError(RejectCode.TOO_LARGE, f"{size} bytes > {MAX_BLOCK_SIZE}")
    if transactions_root(block.transactions) != header.tx_root:
        raise ValidationError(RejectCode.BAD_MERKLE_ROOT, "transactions do not match tx_root")
    seen: set[bytes] = set()
    for position, tx in enumerate(block.transactions):
        check_transaction(tx, chain_id)
        txid = compute_txid(tx.body)
        if txid in seen:
            raise ValidationError(RejectCode.DUPLICATE, f"tx {position} repeats {txid.hex()}")
        seen.add(txid)

"""Transactions: a signed transfer from one key's account to an address.

The signature signs the transaction id, a tagged hash of the encoded body, so the id
does not depend on the signature. Blocks commit to whole encoded transactions, signature
included, so a relayer cannot swap in a bad signature without changing the Merkle root.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.hashing import tagged_hasher
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.crypto.merkle import leaf_hash
from meshchain.core.wire.codec import (
    Address20,
    Codec,
    Hash32,
    PublicKey32,
    Signature64,
    UInt,
    WireStruct,
    encode,
)
from meshchain.errors import DecodeError, RejectCode, ValidationError

# Room for a content id (issue 9) and a short memo; Bitcoin's OP_RETURN allows 80 bytes.
MAX_TX_DATA_SIZE = 256
# Body (~140 bytes) + data + signature, with headroom; checked before decoding.
MAX_TX_SIZE = 512

_txid_hash = tagged_hasher("meshchain/txid")
TxData = Annotated[bytes, msgspec.Meta(max_length=MAX_TX_DATA_SIZE)]


class TxBody(WireStruct, frozen=True):
    chain_id: Hash32
    sender: PublicKey32
    recipient: Address20
    amount: UInt
    fee: UInt
    nonce: UInt
    data: TxData = b""


class Transaction(WireStruct, frozen=True):
    body: TxBody
    signature: Signature64


TX_CODEC: Codec[Transaction] = Codec(Transaction, MAX_TX_SIZE)


def compute_txid(body: TxBody) -> bytes:
    return _txid_hash(encode(body))


# Transaction objects whose txid we computed lately, by identity. Flood relay hands the
# same object to a node several times (and, in the simulator, to every node), and each
# time it must be checked against the mempool first. Two generations of plain dicts:
# forgetting is O(1), where evicting the oldest entry of one full dict (`next(iter(d))`)
# scans every slot deleted at its front: microseconds per transaction once a node had
# seen 65,536 of them.
TXID_CACHE_SIZE = 65_536
_txid_cache: dict[int, tuple[Transaction, bytes]] = {}
_txid_cache_older: dict[int, tuple[Transaction, bytes]] = {}


def txid_of(tx: Transaction) -> bytes:
    """`compute_txid(tx.body)`, remembered for recently seen transaction objects."""
    global _txid_cache, _txid_cache_older
    key = id(tx)
    cached = _txid_cache.get(key) or _txid_cache_older.get(key)
    if cached is not None and cached[0] is tx:
        return cached[1]
    txid = _txid_hash(encode(tx.body))
    if len(_txid_cache) >= TXID_CACHE_SIZE // 2:
        _txid_cache_older, _txid_cache = _txid_cache, {}
    _txid_cache[key] = (tx, txid)  # held, so no other object takes its id meanwhile
    return txid


def sign_transaction(body: TxBody, key: SecretKey, aux_rand: bytes | None = None) -> Transaction:
    if body.sender != key.public_key:
        raise ValueError("body.sender is not the signing key's public key")
    return Transaction(body, key.sign(compute_txid(body), aux_rand))


class VerifiedTx(msgspec.Struct, frozen=True, gc=False):
    """A transaction whose signature checked out, with its derived values computed once.

    A struct the garbage collector does not track (it holds only immutable values, so no
    cycle can pass through it): a mempool of them would otherwise make every full
    collection walk them all, and one is made for every transaction relayed.
    """

    tx: Transaction
    txid: bytes
    sender: bytes  # the sender's 20-byte address
    size: int  # encoded bytes
    leaf: bytes  # Merkle leaf hash of the encoded transaction

    @property
    def fee_rate(self) -> float:
        return self.tx.body.fee / self.size


def verify_transaction(
    tx: Transaction, verifier: SignatureVerifier, raw: bytes | None = None
) -> VerifiedTx:
    """Check the signature; `raw` is the canonical encoding when the caller already has it."""
    if raw is None:
        raw = encode(tx)
    body = tx.body
    txid = txid_of(tx)  # usually known already: the caller checked the mempool with it
    if not verifier.verify(body.sender, txid, tx.signature):
        raise ValidationError(RejectCode.BAD_SIGNATURE, f"transaction {txid.hex()}")
    return VerifiedTx(tx, txid, address_from_public_key(body.sender), len(raw), leaf_hash(raw))


def decode_transaction(raw: bytes, verifier: SignatureVerifier) -> VerifiedTx:
    """Decode canonical bytes and verify the signature; typed errors for both failures."""
    if len(raw) > MAX_TX_SIZE:
        raise ValidationError(RejectCode.TOO_LARGE, f"{len(raw)} bytes > {MAX_TX_SIZE}")
    try:
        tx = TX_CODEC.decode(raw)
    except DecodeError as exc:
        raise ValidationError(RejectCode.MALFORMED, exc.reason) from None
    return verify_transaction(tx, verifier, raw)


def reverified_from_chain(tx: Transaction) -> VerifiedTx:
    """Derived values for a transaction of a block we connected before, whose signature
    was checked then (used when a reorg hands its transactions back to the mempool)."""
    raw = encode(tx)
    return VerifiedTx(
        tx, compute_txid(tx.body), address_from_public_key(tx.body.sender), len(raw), leaf_hash(raw)
    )

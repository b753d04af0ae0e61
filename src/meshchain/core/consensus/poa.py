"""Proof of authority: the validators listed in genesis sign blocks in turn by height.

Clique/Aura style, for private chains that trust their operators: the block at height h
belongs to validator h mod n, which signs the header (BIP340 over a tagged hash of the
header with an empty consensus field). Every block weighs 1, so the longest chain wins;
an authority can only extend the chain in its own turn, and not faster than the block
interval set in genesis.
"""

from __future__ import annotations

import msgspec

from meshchain.core.chain.block import BlockHeader
from meshchain.core.chain.genesis import Genesis
from meshchain.core.crypto.hashing import tagged_hasher
from meshchain.core.crypto.keys import SIGNATURE_SIZE, SecretKey, SignatureVerifier
from meshchain.core.wire.codec import encode
from meshchain.errors import RejectCode, ValidationError

# Clique accepts blocks up to 15 s ahead of the local clock (allowedFutureBlockTime).
POA_MAX_FUTURE_DRIFT_MS = 15_000

_seal_hash = tagged_hasher("meshchain/poa-seal")


def poa_seal_hash(header: BlockHeader) -> bytes:
    return _seal_hash(encode(msgspec.structs.replace(header, consensus=b"")))


class ProofOfAuthority:
    name = "poa"
    max_future_drift_ms = POA_MAX_FUTURE_DRIFT_MS
    finality_depth: int | None = None  # the longest chain wins: any block can be outrun
    certified_by_child = False  # the seal in a header proves the block itself

    def __init__(self, genesis: Genesis, verifier: SignatureVerifier | None = None) -> None:
        self.authorities = [validator.public_key for validator in genesis.validators]
        if not self.authorities:
            raise ValueError("proof of authority needs at least one validator")
        self.block_interval_ms = genesis.consensus.block_interval_ms
        self._verifier = verifier or SignatureVerifier()

    def proposer(self, height: int) -> bytes:
        return self.authorities[height % len(self.authorities)]

    def can_propose(self, height: int, public_key: bytes) -> bool:
        return self.proposer(height) == public_key

    def check_header(self, header: BlockHeader, parent: BlockHeader) -> None:
        if header.timestamp_ms < parent.timestamp_ms + self.block_interval_ms:
            raise ValidationError(
                RejectCode.BAD_TIMESTAMP,
                f"{header.timestamp_ms} is sooner than one block interval after the parent",
            )
        signature = header.consensus
        if len(signature) != SIGNATURE_SIZE:
            raise ValidationError(RejectCode.BAD_CONSENSUS, "poa seal must be a 64-byte signature")
        proposer = self.proposer(header.height)
        if not self._verifier.verify(proposer, poa_seal_hash(header), signature):
            raise ValidationError(
                RejectCode.BAD_CONSENSUS,
                f"height {header.height} is not signed by its authority {proposer.hex()[:16]}",
            )

    def block_weight(self, header: BlockHeader) -> int:
        return 1

    def template_consensus(self, parent: BlockHeader) -> bytes:
        return b""  # the signature is the whole field, made by `seal`

    def seal(self, header: BlockHeader, key: SecretKey) -> BlockHeader:
        if key.public_key != self.proposer(header.height):
            raise ValueError(f"not this key's turn at height {header.height}")
        return msgspec.structs.replace(header, consensus=key.sign(poa_seal_hash(header)))

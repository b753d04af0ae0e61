"""Keys, signatures, tagged hashes, addresses and Merkle trees."""

from meshchain.core.crypto.address import (
    ADDRESS_SIZE,
    address_from_public_key,
    decode_address,
    encode_address,
)
from meshchain.core.crypto.hashing import tagged_hash, tagged_hasher
from meshchain.core.crypto.keys import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    SecretKey,
    SignatureVerifier,
    verify_signature,
)
from meshchain.core.crypto.merkle import MerkleProof, MerkleTree, merkle_proof, merkle_root

__all__ = [
    "ADDRESS_SIZE",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "MerkleProof",
    "MerkleTree",
    "SecretKey",
    "SignatureVerifier",
    "address_from_public_key",
    "decode_address",
    "encode_address",
    "merkle_proof",
    "merkle_root",
    "tagged_hash",
    "tagged_hasher",
    "verify_signature",
]

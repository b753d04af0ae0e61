"""Binding a node's secp256k1 identity to its Noise static key (as libp2p-noise does).

Handshake messages 2 and 3 carry the sender's identity public key and a BIP340 signature,
under a domain-separation tag, over the sender's Noise static public key. The receiver
checks the signature against the static key the handshake itself authenticated, so a
node is known by its identity key and nobody can replay another node's proof with a
different Noise key.
"""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshchain.core.crypto.hashing import tagged_hasher
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.wire.codec import Codec, PublicKey32, Signature64, WireStruct, encode
from meshchain.errors import DecodeError, RemoteProtocolError

# A node has one identity and one Noise static key per run; tests make a few more.
PROOF_CACHE_SIZE = 64
IDENTITY_PROOF_SIZE = 101  # msgpack: array header 1 + (2 + 32) + (2 + 64)

_static_key_digest = tagged_hasher("meshchain/noise-static-key")


class IdentityProof(WireStruct, frozen=True):
    identity_key: PublicKey32
    signature: Signature64


IDENTITY_CODEC: Codec[IdentityProof] = Codec(IdentityProof, IDENTITY_PROOF_SIZE)


def new_noise_static_key() -> bytes:
    """A fresh X25519 private key (OS CSPRNG inside OpenSSL), raw 32 bytes."""
    return X25519PrivateKey.generate().private_bytes_raw()


@functools.lru_cache(maxsize=PROOF_CACHE_SIZE)
def noise_public_key(private: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@functools.lru_cache(maxsize=PROOF_CACHE_SIZE)
def make_identity_proof(identity: SecretKey, noise_static_public: bytes) -> bytes:
    """The proof depends only on the two keys, so a node signs it once, not per handshake."""
    signature = identity.sign(_static_key_digest(noise_static_public))
    return encode(IdentityProof(identity.public_key, signature))


def check_identity_proof(
    payload: bytes, noise_static_public: bytes, verifier: SignatureVerifier
) -> bytes:
    """The authenticated identity key, or RemoteProtocolError saying what is wrong."""
    if not payload:
        raise RemoteProtocolError("handshake payload is missing the identity proof")
    try:
        proof = IDENTITY_CODEC.decode(payload)
    except DecodeError as exc:
        raise RemoteProtocolError(f"bad identity proof: {exc.reason}") from None
    digest = _static_key_digest(noise_static_public)
    if not verifier.verify(proof.identity_key, digest, proof.signature):
        raise RemoteProtocolError("identity signature does not match the Noise static key")
    return proof.identity_key

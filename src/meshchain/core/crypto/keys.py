"""secp256k1 keys and BIP340 Schnorr signatures through coincurve (libsecp256k1).

Public keys travel as 32-byte x-only keys, signatures as 64 bytes, as BIP340 defines.
Parsing an x-only key costs a square root, so verifiers keep a bounded cache of parsed
keys: senders repeat, and the cache saves about 15% of a verification.
"""

from __future__ import annotations

import random
import secrets
from collections import OrderedDict

import coincurve
from coincurve._libsecp256k1 import ffi, lib

from meshchain.errors import CryptoError

SECRET_KEY_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
AUX_RAND_SIZE = 32
# Parsed-key cache: 4,096 keys of ~100 bytes each, a few hundred KiB at most.
PARSED_KEY_CACHE_SIZE = 4096
_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
# SECP256K1_SCHNORRSIG_EXTRAPARAMS_MAGIC (secp256k1_schnorrsig.h).
_EXTRAPARAMS_MAGIC = bytes([0xDA, 0x6F, 0xB3, 0x8C])


class SecretKey:
    """A secp256k1 secret key that signs BIP340 Schnorr signatures."""

    __slots__ = ("_key", "public_key")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_KEY_SIZE:
            raise CryptoError(f"secret key must be {SECRET_KEY_SIZE} bytes, got {len(secret)}")
        value = int.from_bytes(secret, "big")
        if not 0 < value < _CURVE_ORDER:
            raise CryptoError("secret key is out of range for secp256k1")
        self._key = coincurve.PrivateKey(secret)
        self.public_key: bytes = self._key.public_key_xonly.format()

    @classmethod
    def generate(cls, rng: random.Random | None = None) -> SecretKey:
        """A fresh key from the OS CSPRNG (`secrets`), or from `rng` for repeatable tests."""
        while True:
            secret = rng.randbytes(SECRET_KEY_SIZE) if rng is not None else secrets.token_bytes(32)
            if 0 < int.from_bytes(secret, "big") < _CURVE_ORDER:
                return cls(secret)

    @classmethod
    def from_hex(cls, text: str) -> SecretKey:
        try:
            secret = bytes.fromhex(text.strip())
        except ValueError as exc:
            raise CryptoError("secret key is not hex") from exc
        return cls(secret)

    def to_bytes(self) -> bytes:
        return bytes(self._key.secret)

    def sign(self, message: bytes, aux_rand: bytes | None = None) -> bytes:
        """BIP340 signature; `aux_rand` defaults to fresh OS randomness as BIP340 advises."""
        if aux_rand is None:
            aux_rand = secrets.token_bytes(AUX_RAND_SIZE)
        if len(aux_rand) != AUX_RAND_SIZE:
            raise CryptoError(f"aux_rand must be {AUX_RAND_SIZE} bytes, got {len(aux_rand)}")
        if len(message) == 32:
            return bytes(self._key.sign_schnorr(message, aux_rand))
        # coincurve wraps only 32-byte signing; BIP340 allows any length, so call its bundled
        # libsecp256k1 directly (the same library, through coincurve's cffi binding).
        key = self._key
        keypair = ffi.new("secp256k1_keypair *")
        params = ffi.new("secp256k1_schnorrsig_extraparams *")
        aux_buffer = ffi.new("unsigned char[32]", aux_rand)  # params.ndata points into it
        params.magic, params.noncefp, params.ndata = _EXTRAPARAMS_MAGIC, ffi.NULL, aux_buffer
        signature = ffi.new("unsigned char[64]")
        ctx = key.context.ctx
        if not (
            lib.secp256k1_keypair_create(ctx, keypair, key.secret)
            and lib.secp256k1_schnorrsig_sign_custom(
                ctx, signature, message, len(message), keypair, params
            )
        ):
            raise CryptoError("BIP340 signing failed")
        return bytes(ffi.buffer(signature, SIGNATURE_SIZE))

    def __repr__(self) -> str:
        return f"SecretKey(public_key={self.public_key.hex()})"


def parse_public_key(public_key: bytes) -> coincurve.PublicKeyXOnly:
    """Parse an x-only public key, raising CryptoError when it is not on the curve."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise CryptoError(f"public key must be {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    try:
        return coincurve.PublicKeyXOnly(public_key)
    except (ValueError, TypeError) as exc:
        raise CryptoError("public key is not a valid x-only secp256k1 point") from exc


class SignatureVerifier:
    """Verifies BIP340 signatures, caching parsed public keys (bounded, LRU)."""

    __slots__ = ("_cache", "_capacity")

    def __init__(self, capacity: int = PARSED_KEY_CACHE_SIZE) -> None:
        self._cache: OrderedDict[bytes, coincurve.PublicKeyXOnly | None] = OrderedDict()
        self._capacity = capacity

    def _parsed(self, public_key: bytes) -> coincurve.PublicKeyXOnly | None:
        cache = self._cache
        if public_key in cache:
            cache.move_to_end(public_key)
            return cache[public_key]
        parsed: coincurve.PublicKeyXOnly | None
        try:
            parsed = parse_public_key(public_key)
        except CryptoError:
            parsed = None
        cache[public_key] = parsed
        if len(cache) > self._capacity:
            cache.popitem(last=False)
        return parsed

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """True only for a valid signature; malformed keys or signatures are just False."""
        if len(signature) != SIGNATURE_SIZE:
            return False
        parsed = self._parsed(public_key)
        if parsed is None:
            return False
        try:
            return bool(parsed.verify(signature, message))
        except (ValueError, TypeError):
            return False


_default_verifier = SignatureVerifier()


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Verify with the process-wide cached verifier."""
    return _default_verifier.verify(public_key, message, signature)

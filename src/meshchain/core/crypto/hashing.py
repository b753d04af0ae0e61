"""Tagged SHA-256 hashes (BIP340 style) so that no hash can be mistaken for another kind.

`tagged_hash(tag, data) = SHA256(SHA256(tag) || SHA256(tag) || data)`. The tag prefix is
one 64-byte block, so we hash it once and copy the midstate for every call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

HASH_SIZE = 32


def _prefixed_hasher(tag: str) -> hashlib._Hash:
    tag_digest = hashlib.sha256(tag.encode("ascii")).digest()
    return hashlib.sha256(tag_digest + tag_digest)


def tagged_hash(tag: str, data: bytes) -> bytes:
    """One-off tagged hash; for hot paths use `tagged_hasher`."""
    hasher = _prefixed_hasher(tag)
    hasher.update(data)
    return hasher.digest()


def tagged_hasher(tag: str) -> Callable[[bytes], bytes]:
    """A fast tagged hash function for one tag, reusing the precomputed midstate."""
    midstate = _prefixed_hasher(tag)

    def digest(data: bytes) -> bytes:
        hasher = midstate.copy()
        hasher.update(data)
        return hasher.digest()

    return digest


def sha256(data: bytes) -> bytes:
    """Plain SHA-256, for the rare places a protocol fixes it (Noise, BIP340 vectors)."""
    return hashlib.sha256(data).digest()

"""Human-readable addresses: bech32m (BIP350) of a 20-byte tagged hash of the public key.

`mc1…` on every chain; the checksum catches any error in up to four characters, so a
mistyped address is rejected instead of burning funds.
"""

from __future__ import annotations

import functools

from bech32m import codecs as bech32

from meshchain.core.crypto.hashing import tagged_hasher
from meshchain.errors import AddressError

ADDRESS_HRP = "mc"
ADDRESS_SIZE = 20
# bech32 strings are at most 90 characters (BIP173).
MAX_ADDRESS_TEXT_LENGTH = 90

_address_hash = tagged_hasher("meshchain/address")


# Ours: senders repeat (a wallet sends many transactions), and every transaction a node
# admits needs its sender's address: remember this many (~100 bytes each).
ADDRESS_CACHE_SIZE = 16_384


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def address_from_public_key(public_key: bytes) -> bytes:
    """The 20-byte account address of a 32-byte x-only public key."""
    return _address_hash(public_key)[:ADDRESS_SIZE]


def encode_address(address: bytes) -> str:
    if len(address) != ADDRESS_SIZE:
        raise AddressError(f"address must be {ADDRESS_SIZE} bytes, got {len(address)}")
    data = bytes(bech32.convertbits(address, 8, 5, True))
    text: str = bech32.bech32_encode(ADDRESS_HRP, data, bech32.Encoding.BECH32M)
    return text


def decode_address(text: str) -> bytes:
    """Parse `mc1…`; raises AddressError saying what is wrong."""
    if not isinstance(text, str) or len(text) > MAX_ADDRESS_TEXT_LENGTH:
        raise AddressError("address is not a string of at most 90 characters")
    try:
        hrp, data, spec = bech32.bech32_decode(text.strip())
    except bech32.DecodeError:
        raise AddressError(f"address {text!r} has a bad checksum or characters") from None
    if spec != bech32.Encoding.BECH32M:
        raise AddressError(f"address {text!r} uses bech32, not bech32m")
    if hrp != ADDRESS_HRP:
        raise AddressError(f"address {text!r} has prefix {hrp!r}, expected {ADDRESS_HRP!r}")
    try:
        decoded = bech32.convertbits(data, 5, 8, False)
    except bech32.DecodeError:
        raise AddressError(f"address {text!r} has bad padding") from None
    if len(decoded) != ADDRESS_SIZE:
        raise AddressError(f"address {text!r} does not hold {ADDRESS_SIZE} bytes")
    return bytes(decoded)

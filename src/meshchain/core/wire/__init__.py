"""Typed messages and their canonical binary encoding."""

from meshchain.core.wire.codec import (
    MAX_MESSAGE_SIZE,
    Address20,
    Codec,
    Hash32,
    PublicKey32,
    Signature64,
    UInt,
    WireStruct,
    encode,
)

__all__ = [
    "MAX_MESSAGE_SIZE",
    "Address20",
    "Codec",
    "Hash32",
    "PublicKey32",
    "Signature64",
    "UInt",
    "WireStruct",
    "encode",
]

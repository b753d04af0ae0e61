"""Canonical msgpack encoding of msgspec structs.

Every struct is `array_like` (no field names, no dicts in consensus data) and msgspec
writes each value in its shortest form, so an object has exactly one encoding. Decoding
accepts only that encoding: bytes that decode but re-encode differently (a long-form
integer, a str8 where a fixstr fits) or carry trailing bytes raise DecodeError, so
`encode(decode(b)) == b` for every accepted `b` and hashes of bytes are hashes of values.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

import msgspec

from meshchain.errors import DecodeError

# Bitcoin's MAX_PROTOCOL_MESSAGE_LENGTH (src/net.h): no message we decode is larger.
MAX_MESSAGE_SIZE = 4_000_000
# msgspec checks integer bounds within int64; amounts and heights fit well inside.
MAX_UINT = 2**63 - 1

UInt = Annotated[int, msgspec.Meta(ge=0, le=MAX_UINT)]
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
UInt16 = Annotated[int, msgspec.Meta(ge=0, le=2**16 - 1)]
Hash32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Address20 = Annotated[bytes, msgspec.Meta(min_length=20, max_length=20)]
PublicKey32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Signature64 = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


class WireStruct(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False
):
    """Base of every encoded type: positional, immutable, no unknown fields.

    `gc=False`: a decoded message is a tree of immutable values that cannot form a
    reference cycle, so the garbage collector need not track (and rescan) each struct.
    """


T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


class Codec(Generic[T]):
    """A reusable canonical decoder for one type, with a size bound."""

    __slots__ = ("_decoder", "max_size", "type_name")

    def __init__(self, type_: type[T], max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._decoder = msgspec.msgpack.Decoder(type_)
        self.max_size = max_size
        self.type_name = getattr(type_, "__name__", str(type_))

    def decode(self, data: bytes | bytearray | memoryview) -> T:
        if isinstance(data, memoryview):
            # Comparing bytes with a memoryview goes item by item (40x slower than memcmp),
            # so copy once; the canonical check below compares bytes with bytes.
            data = data.tobytes()
        if len(data) > self.max_size:
            raise DecodeError(f"{self.type_name}: {len(data)} bytes exceeds limit {self.max_size}")
        try:
            value: T = self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise DecodeError(f"{self.type_name}: invalid value: {exc}") from None
        except msgspec.DecodeError as exc:
            raise DecodeError(f"{self.type_name}: malformed: {exc}") from None
        if _encoder.encode(value) != data:
            raise DecodeError(f"{self.type_name}: non-canonical encoding")
        return value

    def encode(self, value: T) -> bytes:
        return _encoder.encode(value)

    def encode_onto(self, value: T, buffer: bytearray) -> int:
        """Append the encoding of `value` to `buffer` (no intermediate bytes); its size."""
        before = len(buffer)
        _encoder.encode_into(value, buffer, -1)
        return len(buffer) - before

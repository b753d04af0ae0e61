"""The address book's file format: a versioned, canonical msgpack encoding.

The file is an envelope `[version, body, checksum]`; the body's layout belongs to its
version, so a node that meets a newer file says "unknown version" instead of misreading
it, and the checksum (like Bitcoin's peers.dat) catches a damaged disk or copy. The
body holds the bucketing key and every entry with the state a restart must keep; slot
positions are not stored but recomputed from the key on load (as Bitcoin Core does),
so a damaged file cannot put an entry where its hash does not say.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec

from meshchain.core.peers.address import NetAddress
from meshchain.core.wire.codec import Codec, Hash32, UInt, UInt16, WireStruct, encode
from meshchain.errors import DecodeError

# The only layout this code writes and reads.
FORMAT_VERSION = 1
# A group is a family byte and at most 128 prefix bits (GroupPolicy.group).
MAX_GROUP_LENGTH = 1 + 16
# Bitcoin's ADDRMAN_NEW_BUCKETS_PER_ADDRESS: the most new-table references one entry has.
MAX_STORED_REFERENCES = 8
# A full book holds 1024*64 new + 256*64 tried entries of under 200 bytes each (~16 MB);
# a file much larger than that was not written by us.
MAX_FILE_SIZE = 32 * 1024 * 1024

NodeId = Annotated[bytes, msgspec.Meta(max_length=32)]
Group = Annotated[bytes, msgspec.Meta(max_length=MAX_GROUP_LENGTH)]
BucketList = Annotated[list[UInt16], msgspec.Meta(max_length=MAX_STORED_REFERENCES)]


class AddressBookError(DecodeError):
    """Saved address-book bytes that are corrupt or of an unknown version.

    The caller logs it and starts from an empty book: losing the book costs some
    bootstrap time, trusting a damaged one could cost much more.
    """


class StoredEntry(WireStruct, frozen=True):
    """One address and what we learned about it."""

    address: NetAddress
    node_id: NodeId
    services: UInt
    seen: UInt
    last_try: UInt
    last_success: UInt
    attempts: UInt
    source_group: Group
    in_tried: bool
    new_buckets: BucketList  # the new-table buckets that reference it; empty when tried


class StoredBook(WireStruct, frozen=True):
    key: Hash32
    entries: list[StoredEntry]


class _Envelope(WireStruct, frozen=True):
    version: UInt16
    body: msgspec.Raw
    checksum: Hash32  # blake2b-256 of the body


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=32, person=b"mc-addrbook").digest()


_ENVELOPE_CODEC: Codec[_Envelope] = Codec(_Envelope, MAX_FILE_SIZE)
_BOOK_CODEC: Codec[StoredBook] = Codec(StoredBook, MAX_FILE_SIZE)


def encode_book(book: StoredBook) -> bytes:
    body = encode(book)
    return encode(_Envelope(FORMAT_VERSION, msgspec.Raw(body), _checksum(body)))


def decode_book(data: bytes) -> StoredBook:
    """The stored book in `data`; AddressBookError if it is not one we can read."""
    try:
        envelope = _ENVELOPE_CODEC.decode(data)
    except DecodeError as exc:
        raise AddressBookError(f"address book: {exc.reason}") from None
    if envelope.version != FORMAT_VERSION:
        raise AddressBookError(f"address book: unknown format version {envelope.version}")
    body = bytes(envelope.body)
    if _checksum(body) != envelope.checksum:
        raise AddressBookError("address book: checksum mismatch")
    try:
        return _BOOK_CODEC.decode(body)
    except DecodeError as exc:
        raise AddressBookError(f"address book: {exc.reason}") from None

"""The canonical msgpack codec: round trips, and rejection of everything non-canonical."""

from __future__ import annotations

import random
import struct
from typing import Annotated, Any

import msgspec
import pytest

from meshchain.core.chain.block import (
    BLOCK_CODEC,
    BLOCK_VERSION,
    HEADER_CODEC,
    MAX_BLOCK_TXS,
    MAX_CONSENSUS_FIELD_SIZE,
    Block,
    BlockHeader,
    block_hash,
    header_hash,
    transactions_root,
)
from meshchain.core.chain.tx import (
    MAX_TX_DATA_SIZE,
    MAX_TX_SIZE,
    TX_CODEC,
    Transaction,
    TxBody,
    compute_txid,
    sign_transaction,
)
from meshchain.core.crypto.keys import SecretKey, verify_signature
from meshchain.core.wire.codec import MAX_UINT, Codec, UInt, WireStruct, encode
from meshchain.core.wire.messages import MESSAGE_CODEC, BlockMessage, TransactionMessage
from meshchain.errors import DecodeError

KEY = SecretKey.generate(random.Random(42))
CHAIN_ID = bytes(range(32))


def make_tx(nonce: int = 0, data: bytes = b"", amount: int = 1_000) -> Transaction:
    body = TxBody(CHAIN_ID, KEY.public_key, b"\xaa" * 20, amount, 300, nonce, data)
    return sign_transaction(body, KEY, bytes(32))


def make_block(count: int = 3) -> Block:
    transactions = [make_tx(nonce, data=bytes([nonce]) * nonce) for nonce in range(count)]
    header = BlockHeader(
        version=BLOCK_VERSION,
        chain_id=CHAIN_ID,
        height=7,
        parent=b"\x11" * 32,
        timestamp_ms=1_700_000_000_000,
        tx_root=transactions_root(transactions),
        state_root=b"\x22" * 32,
        beneficiary=b"\x33" * 20,
        consensus=b"seal" * 16,
    )
    return Block(header, transactions)


def as_python(value: Any) -> Any:
    """The plain msgpack structure (lists, bytes, ints) of an encoded value, for editing."""
    return msgspec.msgpack.decode(encode(value))


def pack(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


def rejected(codec: Codec[Any], data: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert info.value.reason == str(info.value)
    assert info.value.reason.startswith(codec.type_name + ":")
    return info.value.reason


class Small(WireStruct, frozen=True):
    """A tiny struct to hand-build encodings for."""

    count: UInt
    name: str
    blob: Annotated[bytes, msgspec.Meta(max_length=8)]


SMALL_CODEC: Codec[Small] = Codec(Small, max_size=64)
SMALL = Small(5, "ab", b"\x01\x02")
# fixarray(3), positive fixint 5, fixstr "ab", bin8 of length 2.
SMALL_BYTES = b"\x93\x05\xa2ab\xc4\x02\x01\x02"


# --------------------------------------------------------------------- round trips


def test_small_struct_encoding_is_the_shortest_form() -> None:
    assert SMALL_CODEC.encode(SMALL) == SMALL_BYTES
    assert SMALL_CODEC.decode(SMALL_BYTES) == SMALL


@pytest.mark.parametrize("data", [b"", b"x", bytes(MAX_TX_DATA_SIZE)], ids=len)
def test_transaction_round_trip(data: bytes) -> None:
    tx = make_tx(nonce=3, data=data)
    raw = TX_CODEC.encode(tx)
    assert raw == encode(tx)
    decoded = TX_CODEC.decode(raw)
    assert decoded == tx
    assert TX_CODEC.encode(decoded) == raw
    assert len(raw) <= MAX_TX_SIZE
    # The signature survives the trip and still signs the txid.
    assert verify_signature(KEY.public_key, compute_txid(decoded.body), decoded.signature)


def test_transaction_extreme_integers_round_trip() -> None:
    body = TxBody(CHAIN_ID, KEY.public_key, bytes(20), MAX_UINT, 0, MAX_UINT, b"")
    tx = Transaction(body, b"\xff" * 64)
    assert TX_CODEC.decode(TX_CODEC.encode(tx)) == tx


@pytest.mark.parametrize("count", [0, 1, 5])
def test_block_round_trip(count: int) -> None:
    block = make_block(count)
    raw = BLOCK_CODEC.encode(block)
    decoded = BLOCK_CODEC.decode(raw)
    assert decoded == block
    assert BLOCK_CODEC.encode(decoded) == raw
    assert block_hash(decoded) == block_hash(block)
    assert decoded.header.tx_root == transactions_root(decoded.transactions)
    header_raw = HEADER_CODEC.encode(block.header)
    assert HEADER_CODEC.decode(header_raw) == block.header
    assert header_hash(HEADER_CODEC.decode(header_raw)) == block_hash(block)


def test_message_round_trips() -> None:
    tx = make_tx()
    block = make_block(2)
    for message in (TransactionMessage(tx), BlockMessage(block)):
        raw = MESSAGE_CODEC.encode(message)
        decoded = MESSAGE_CODEC.decode(raw)
        assert type(decoded) is type(message)
        assert decoded == message
        assert MESSAGE_CODEC.encode(decoded) == raw
    # The tag is the first array element: [16, tx] and [17, block].
    assert MESSAGE_CODEC.encode(TransactionMessage(tx)) == b"\x92\x10" + encode(tx)
    assert MESSAGE_CODEC.encode(BlockMessage(block)) == b"\x92\x11" + encode(block)


# ---------------------------------------------------------------------- rejections


def test_trailing_bytes_are_rejected() -> None:
    tx_raw = TX_CODEC.encode(make_tx())
    block_raw = BLOCK_CODEC.encode(make_block(1))
    for codec, raw in (
        (SMALL_CODEC, SMALL_BYTES),
        (TX_CODEC, tx_raw),
        (BLOCK_CODEC, block_raw),
        (MESSAGE_CODEC, b"\x92\x10" + tx_raw),
    ):
        for extra in (b"\x00", b"\xc0", raw[:1]):
            assert "trailing" in rejected(codec, raw + extra)


@pytest.mark.parametrize(
    "data",
    [
        b"\x93\xcc\x05\xa2ab\xc4\x02\x01\x02",  # uint8 5
        b"\x93\xcd\x00\x05\xa2ab\xc4\x02\x01\x02",  # uint16 5
        b"\x93\xce\x00\x00\x00\x05\xa2ab\xc4\x02\x01\x02",  # uint32 5
        b"\x93\xcf" + struct.pack(">Q", 5) + b"\xa2ab\xc4\x02\x01\x02",  # uint64 5
        b"\x93\xd0\x05\xa2ab\xc4\x02\x01\x02",  # int8 5
        b"\x93\xd3" + struct.pack(">q", 5) + b"\xa2ab\xc4\x02\x01\x02",  # int64 5
        b"\x93\x05\xd9\x02ab\xc4\x02\x01\x02",  # str8 where fixstr fits
        b"\x93\x05\xda\x00\x02ab\xc4\x02\x01\x02",  # str16
        b"\x93\x05\xa2ab\xc5\x00\x02\x01\x02",  # bin16 where bin8 fits
        b"\xdc\x00\x03\x05\xa2ab\xc4\x02\x01\x02",  # array16 where fixarray fits
        b"\xdd\x00\x00\x00\x03\x05\xa2ab\xc4\x02\x01\x02",  # array32
    ],
    ids=[
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int64",
        "str8",
        "str16",
        "bin16",
        "array16",
        "array32",
    ],
)
def test_non_canonical_encodings_are_rejected(data: bytes) -> None:
    # Each decodes to the same value under plain msgpack, which is the point.
    assert msgspec.msgpack.decode(data, type=Small) == SMALL
    assert "non-canonical" in rejected(SMALL_CODEC, data)


def test_non_canonical_integer_inside_a_transaction() -> None:
    tx = make_tx(nonce=5, amount=7)
    raw = TX_CODEC.encode(tx)
    # amount 7 is the positive fixint 0x07 right after the 20-byte recipient.
    recipient = b"\xc4\x14" + b"\xaa" * 20
    position = raw.index(recipient) + len(recipient)
    assert raw[position] == 7
    long_form = raw[:position] + b"\xcf" + struct.pack(">Q", 7) + raw[position + 1 :]
    assert msgspec.msgpack.decode(long_form, type=Transaction) == tx
    assert "non-canonical" in rejected(TX_CODEC, long_form)


def test_extra_array_elements_are_rejected() -> None:
    tx = as_python(make_tx())
    assert "at most length 2" in rejected(TX_CODEC, pack([*tx, b"extra"]))
    assert "at most length 7" in rejected(TX_CODEC, pack([[*tx[0], 0], tx[1]]))
    block = as_python(make_block(1))
    assert "at most length 9" in rejected(BLOCK_CODEC, pack([[*block[0], b""], block[1]]))
    assert "at most length 2" in rejected(BLOCK_CODEC, pack([*block, []]))
    assert "at most length 3" in rejected(SMALL_CODEC, b"\x94" + SMALL_BYTES[1:] + b"\x00")


def test_missing_fields_are_rejected() -> None:
    tx = as_python(make_tx())
    assert "at least length 2" in rejected(TX_CODEC, pack([tx[0]]))
    assert "at least length 2" in rejected(TX_CODEC, pack([]))
    assert "at least length 6" in rejected(TX_CODEC, pack([tx[0][:5], tx[1]]))
    # `data` has a default, so msgspec fills it in, but the short form is not canonical.
    assert "non-canonical" in rejected(TX_CODEC, pack([tx[0][:6], tx[1]]))
    block = as_python(make_block(1))
    assert "at least length 2" in rejected(BLOCK_CODEC, pack([block[0]]))
    assert "at least length 8" in rejected(BLOCK_CODEC, pack([block[0][:7], block[1]]))
    assert "at least length 3" in rejected(SMALL_CODEC, b"\x92\x05\xa2ab")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda tx: [[*tx[0][:3], "1000", *tx[0][4:]], tx[1]], "Expected `int`, got `str`"),
        (lambda tx: [[*tx[0][:3], 1.0, *tx[0][4:]], tx[1]], "Expected `int`, got `float`"),
        (lambda tx: [[*tx[0][:3], None, *tx[0][4:]], tx[1]], "Expected `int`, got `None`"),
        (lambda tx: [[*tx[0][:3], True, *tx[0][4:]], tx[1]], "Expected `int`, got `bool`"),
        (lambda tx: [["chain", *tx[0][1:]], tx[1]], "Expected `bytes`, got `str`"),
        (lambda tx: [tx[0], 0], "Expected `bytes`, got `int`"),
        (lambda tx: [7, tx[1]], "Expected `array`, got `int`"),
        (lambda tx: [[*tx[0][:6], [1, 2]], tx[1]], "Expected `bytes`, got `array`"),
    ],
    ids=["str-int", "float-int", "nil-int", "bool-int", "str-bytes", "int-sig", "int-body", "list"],
)
def test_wrong_types_are_rejected(edit: Any, message: str) -> None:
    assert message in rejected(TX_CODEC, pack(edit(as_python(make_tx()))))


def test_wrong_types_in_a_block_are_rejected() -> None:
    block = as_python(make_block(1))
    assert "Expected `array`, got `bytes`" in rejected(BLOCK_CODEC, pack([block[0], b"txs"]))
    assert "Expected `array`, got `int`" in rejected(BLOCK_CODEC, pack([block[0], [5]]))
    bad_height = [*block[0][:2], "7", *block[0][3:]]
    assert "Expected `int`, got `str`" in rejected(BLOCK_CODEC, pack([bad_height, block[1]]))


def _with_body_field(index: int, value: Any) -> bytes:
    tx = as_python(make_tx())
    body = list(tx[0])
    body[index] = value
    return pack([body, tx[1]])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with_body_field(6, bytes(MAX_TX_DATA_SIZE + 1)), "length <= 256"),
        (_with_body_field(0, bytes(31)), "length >= 32"),
        (_with_body_field(0, bytes(33)), "length <= 32"),
        (_with_body_field(1, bytes(31)), "length >= 32"),
        (_with_body_field(2, bytes(21)), "length <= 20"),
        (_with_body_field(2, b""), "length >= 20"),
        (pack([as_python(make_tx())[0], bytes(63)]), "length >= 64"),
        (pack([as_python(make_tx())[0], bytes(65)]), "length <= 64"),
    ],
    ids=[
        "data-257",
        "chain-31",
        "chain-33",
        "sender-31",
        "recipient-21",
        "recipient-0",
        "sig-63",
        "sig-65",
    ],
)
def test_bytes_outside_their_bounds_are_rejected(data: bytes, message: str) -> None:
    assert message in rejected(TX_CODEC, data)


def test_block_bounds_are_enforced() -> None:
    block = as_python(make_block(0))
    header = list(block[0])
    header[8] = bytes(MAX_CONSENSUS_FIELD_SIZE + 1)
    assert "length <= 65536" in rejected(BLOCK_CODEC, pack([header, []]))
    header[8] = bytes(MAX_CONSENSUS_FIELD_SIZE)
    assert BLOCK_CODEC.decode(pack([header, []])).header.consensus == header[8]
    # Too many transactions: the array32 count alone is enough to refuse.
    prefix = b"\x92" + pack(block[0]) + b"\xdd"
    for count in (MAX_BLOCK_TXS + 1, 2**32 - 1):
        data = prefix + count.to_bytes(4, "big")
        assert f"length <= {MAX_BLOCK_TXS}" in rejected(BLOCK_CODEC, data)


def test_input_over_max_size_is_rejected_before_decoding() -> None:
    assert "65 bytes exceeds limit 64" in rejected(SMALL_CODEC, SMALL_BYTES + bytes(56))
    long_name = Small(1, "x" * 40, b"")
    raw = SMALL_CODEC.encode(long_name)
    assert len(raw) <= 64
    assert SMALL_CODEC.decode(raw) == long_name
    too_long = Small(1, "x" * 60, b"")
    assert "exceeds limit" in rejected(SMALL_CODEC, SMALL_CODEC.encode(too_long))
    # A real transaction at the limit: a body whose data is at the bound is still fine,
    # but any 513 bytes are refused without looking at them.
    assert f"{MAX_TX_SIZE + 1} bytes exceeds limit {MAX_TX_SIZE}" in rejected(
        TX_CODEC, bytes(MAX_TX_SIZE + 1)
    )


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (3, -1, ">= 0"),
        (4, -(2**63), ">= 0"),
        (5, -5, ">= 0"),
        (3, MAX_UINT + 1, f"<= {MAX_UINT}"),
        (5, 2**64 - 1, f"<= {MAX_UINT}"),
    ],
    ids=["amount-1", "fee-min", "nonce-5", "amount-2^63", "nonce-2^64-1"],
)
def test_integers_outside_their_bounds_are_rejected(index: int, value: int, message: str) -> None:
    assert message in rejected(TX_CODEC, _with_body_field(index, value))


def test_block_version_is_a_uint16() -> None:
    block = as_python(make_block(0))
    for version, message in ((-1, ">= 0"), (2**16, "<= 65535")):
        header = [version, *block[0][1:]]
        assert message in rejected(BLOCK_CODEC, pack([header, []]))


def test_maps_instead_of_arrays_are_rejected() -> None:
    tx = as_python(make_tx())
    body_names = ["chain_id", "sender", "recipient", "amount", "fee", "nonce", "data"]
    as_map = {"body": dict(zip(body_names, tx[0])), "signature": tx[1]}
    assert "Expected `array`, got `object`" in rejected(TX_CODEC, pack(as_map))
    assert "Expected `array`, got `object`" in rejected(TX_CODEC, pack([as_map["body"], tx[1]]))
    block = as_python(make_block(0))
    assert "Expected `array`, got `object`" in rejected(BLOCK_CODEC, pack({"header": block[0]}))
    assert "Expected `array`, got `object`" in rejected(MESSAGE_CODEC, pack({"type": 1}))


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", b"\xc4"], ids=["empty", "never-used-opcode", "truncated-bin"]
)
def test_malformed_msgpack_is_rejected(data: bytes) -> None:
    for codec in (SMALL_CODEC, TX_CODEC, BLOCK_CODEC, MESSAGE_CODEC):
        assert "malformed" in rejected(codec, data)


def test_truncated_encodings_are_rejected() -> None:
    tx_raw = encode(make_tx())
    block_raw = encode(make_block(2))
    for codec, raw in (
        (SMALL_CODEC, SMALL_BYTES),
        (TX_CODEC, tx_raw),
        (BLOCK_CODEC, block_raw),
        (MESSAGE_CODEC, b"\x92\x11" + block_raw),
    ):
        for cut in (1, 2, len(raw) // 2):
            assert "truncated" in rejected(codec, raw[:-cut])


def test_message_codec_rejects_unknown_and_mismatched_tags() -> None:
    tx_raw = encode(make_tx())
    block_raw = encode(make_block(1))
    for tag in (0, 5, 127):
        assert f"Invalid value {tag}" in rejected(MESSAGE_CODEC, b"\x92" + bytes([tag]) + tx_raw)
    assert "Expected `int`, got `str`" in rejected(MESSAGE_CODEC, pack(["1", []]))
    assert "at least length 1" in rejected(MESSAGE_CODEC, pack([]))
    # A valid tag with the other message's payload.
    assert "at least length 8" in rejected(MESSAGE_CODEC, b"\x92\x11" + tx_raw)
    assert "invalid value" in rejected(MESSAGE_CODEC, b"\x92\x10" + block_raw)
    # A bare transaction or block (no tag) is not a message.
    assert "invalid value" in rejected(MESSAGE_CODEC, tx_raw)
    assert "invalid value" in rejected(MESSAGE_CODEC, block_raw)

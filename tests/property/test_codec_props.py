"""Canonical codec properties: round trips both ways, and every input either decodes to a
value that re-encodes to exactly that input or raises DecodeError, never anything else.

Signatures and roots are arbitrary bytes of the right size: the codec does not check them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meshchain.core.chain.block import (
    BLOCK_CODEC,
    HEADER_CODEC,
    MAX_CONSENSUS_FIELD_SIZE,
    Block,
    BlockHeader,
)
from meshchain.core.chain.tx import MAX_TX_DATA_SIZE, MAX_TX_SIZE, TX_CODEC, Transaction, TxBody
from meshchain.core.wire.codec import MAX_UINT, Codec, encode
from meshchain.core.wire.messages import MESSAGE_CODEC, BlockMessage, Message, TransactionMessage
from meshchain.errors import DecodeError

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODECS: tuple[Codec[Any], ...] = (TX_CODEC, BLOCK_CODEC, MESSAGE_CODEC, HEADER_CODEC)


def fixed(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


uints = st.integers(min_value=0, max_value=MAX_UINT)

tx_bodies = st.builds(
    TxBody,
    chain_id=fixed(32),
    sender=fixed(32),
    recipient=fixed(20),
    amount=uints,
    fee=uints,
    nonce=uints,
    data=st.binary(max_size=MAX_TX_DATA_SIZE),
)
transactions = st.builds(Transaction, body=tx_bodies, signature=fixed(64))
headers = st.builds(
    BlockHeader,
    version=st.integers(min_value=0, max_value=2**16 - 1),
    chain_id=fixed(32),
    height=uints,
    parent=fixed(32),
    timestamp_ms=uints,
    tx_root=fixed(32),
    state_root=fixed(32),
    beneficiary=fixed(20),
    consensus=st.binary(max_size=300) | st.just(bytes(MAX_CONSENSUS_FIELD_SIZE)),
)
blocks = st.builds(Block, header=headers, transactions=st.lists(transactions, max_size=4))
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(TransactionMessage, transaction=transactions),
    st.builds(BlockMessage, block=blocks),
)
# A valid canonical encoding of any of the wire types.
encodings = st.one_of(
    transactions.map(encode), blocks.map(encode), messages.map(encode), headers.map(encode)
)


def decodes_canonically_or_fails_cleanly(data: bytes) -> int:
    """Feed `data` to every codec; returns how many accepted it."""
    accepted = 0
    for codec in CODECS:
        failure: DecodeError | None = None
        try:
            value = codec.decode(data)
        except DecodeError as exc:
            failure = exc
        if failure is not None:
            assert failure.reason.startswith(codec.type_name + ": ")
            assert len(failure.reason) > len(codec.type_name) + 2
            continue
        assert codec.encode(value) == data
        assert encode(value) == data
        accepted += 1
    return accepted


@ROUND_TRIP
@given(transactions)
def test_transaction_round_trip(tx: Transaction) -> None:
    raw = TX_CODEC.encode(tx)
    assert len(raw) <= MAX_TX_SIZE  # every valid transaction fits the size bound
    decoded = TX_CODEC.decode(raw)
    assert decoded == tx
    assert TX_CODEC.encode(decoded) == raw


@ROUND_TRIP
@given(blocks)
def test_block_round_trip(block: Block) -> None:
    raw = BLOCK_CODEC.encode(block)
    decoded = BLOCK_CODEC.decode(raw)
    assert decoded == block
    assert BLOCK_CODEC.encode(decoded) == raw
    header_raw = HEADER_CODEC.encode(block.header)
    assert HEADER_CODEC.decode(header_raw) == block.header
    assert raw.startswith(b"\x92" + header_raw)


@ROUND_TRIP
@given(messages)
def test_message_round_trip(message: Message) -> None:
    raw = MESSAGE_CODEC.encode(message)
    decoded = MESSAGE_CODEC.decode(raw)
    assert type(decoded) is type(message)
    assert decoded == message
    assert MESSAGE_CODEC.encode(decoded) == raw
    # Exactly one codec accepts a message: the tag makes it neither a tx nor a block.
    assert decodes_canonically_or_fails_cleanly(raw) == 1


@ROUND_TRIP
@given(encodings)
def test_valid_encodings_are_accepted_by_exactly_one_codec(raw: bytes) -> None:
    assert decodes_canonically_or_fails_cleanly(raw) == 1


@FUZZ
@given(st.binary(max_size=300))
@example(b"")
@example(b"\x91" * 300)  # deep nesting
@example(b"\xdd\xff\xff\xff\xff")  # array32 claiming 4 billion elements
@example(b"\xc6\xff\xff\xff\xff")  # bin32 claiming 4 GiB
@example(b"\x92\x01\x92")
@example(b"\xc7\x01\xff\x00")  # ext8
def test_arbitrary_bytes_decode_canonically_or_raise_decode_error(data: bytes) -> None:
    decodes_canonically_or_fails_cleanly(data)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.just(0)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, value in mutations:
        if kind == "insert":
            buffer.insert(position % (len(buffer) + 1), value)
        elif buffer:
            index = position % len(buffer)
            if kind == "flip":
                buffer[index] ^= value
            else:
                del buffer[index]
    return bytes(buffer)


@FUZZ
@given(encodings, st.lists(mutation, min_size=1, max_size=3))
def test_mutated_encodings_decode_canonically_or_raise_decode_error(
    raw: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    mutated = mutate(raw, mutations)
    decodes_canonically_or_fails_cleanly(mutated)


@FUZZ
@given(encodings, st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_single_byte_flip_never_yields_the_same_value(raw: bytes, position: int, mask: int) -> None:
    # Canonical encoding is injective the other way too: a changed byte string that still
    # decodes must decode to a different value (else two encodings of one value exist).
    index = position % len(raw)
    flipped = bytearray(raw)
    flipped[index] ^= mask
    for codec in CODECS:
        try:
            original = codec.decode(raw)
        except DecodeError:
            continue
        try:
            value = codec.decode(bytes(flipped))
        except DecodeError:
            continue
        assert value != original
        assert codec.encode(value) == bytes(flipped)

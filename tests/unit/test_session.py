"""Secure sessions in memory: two state machines wired together, no sockets, no sleeps."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchain.chainkit import ChainKit
from meshchain.core.chain.block import Block
from meshchain.core.chain.genesis import chain_id
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.transport import session as session_module
from meshchain.core.transport.identity import make_identity_proof, new_noise_static_key
from meshchain.core.transport.session import (
    MAX_FRAME_PLAINTEXT,
    PROTOCOL_VERSION,
    RECORD_BUFFER_SIZE,
    SEAL_FRAME_PLAINTEXT,
    AdmissionPolicy,
    HandshakeCompleted,
    LocalPeer,
    MessageArrived,
    PongReceived,
    SecureSession,
    SessionClosed,
    SessionEstablished,
    SessionEvent,
    SessionState,
    SessionTimeouts,
)
from meshchain.core.wire.codec import MAX_MESSAGE_SIZE
from meshchain.core.wire.messages import (
    MESSAGE_CODEC,
    BlockMessage,
    GoodbyeCode,
    Hello,
    Message,
    TransactionMessage,
)

KIT = ChainKit(seed=31, accounts=2)
CHAIN = chain_id(KIT.genesis)
T0 = 1_000.0


def hello_for(key: SecretKey, chain: bytes = CHAIN, version: int = PROTOCOL_VERSION) -> Hello:
    return Hello(version, chain, key.public_key, "127.0.0.1:1", 0, 0, bytes(32), "test/1")


def make_session(
    key: SecretKey,
    *,
    initiator: bool,
    chain: bytes = CHAIN,
    members: frozenset[bytes] | None = None,
    hello: Hello | None = None,
    expected: bytes | None = None,
) -> SecureSession:
    local = LocalPeer(key, new_noise_static_key(), hello or hello_for(key, chain))
    return SecureSession(
        local,
        AdmissionPolicy(chain, members),
        initiator=initiator,
        now=T0,
        rng=random.Random(7),
        expected_identity=expected,
    )


@dataclass
class Pair:
    client: SecureSession
    server: SecureSession
    client_events: list[SessionEvent]
    server_events: list[SessionEvent]

    def pump(self, now: float = T0) -> None:
        """Move bytes both ways until neither side has anything to say."""
        for _ in range(20):
            to_server, to_client = self.client.data_to_send(), self.server.data_to_send()
            if not to_server and not to_client:
                break
            self.server.receive_data(to_server, now)
            self.client.receive_data(to_client, now)
            self.client_events += self.client.events()
            self.server_events += self.server.events()


def make_pair(**server_options: object) -> Pair:
    client_key, server_key = SecretKey.generate(), SecretKey.generate()
    client = make_session(client_key, initiator=True)
    server = make_session(server_key, initiator=False, **server_options)  # type: ignore[arg-type]
    return Pair(client, server, [], [])


def open_pair() -> Pair:
    pair = make_pair()
    pair.pump()
    assert pair.client.state is SessionState.OPEN
    assert pair.server.state is SessionState.OPEN
    return pair


def closed(events: list[SessionEvent]) -> SessionClosed:
    found = [e for e in events if isinstance(e, SessionClosed)]
    assert found, f"no SessionClosed in {events}"
    return found[0]


def sample_block(transactions: int) -> Block:
    chain = KIT.chain()
    txs = [KIT.transfer(chain, 0, 1, 1, 1, n, data=bytes(200)) for n in range(transactions)]
    header = KIT.next_block(chain, []).header
    return Block(header, txs)


def test_handshake_authenticates_both_identities_and_exchanges_hellos() -> None:
    pair = open_pair()
    assert pair.client.remote_identity == pair.server.local.identity.public_key
    assert pair.server.remote_identity == pair.client.local.identity.public_key
    assert [type(e) for e in pair.client_events] == [HandshakeCompleted, SessionEstablished]
    assert [type(e) for e in pair.server_events] == [HandshakeCompleted, SessionEstablished]
    established = pair.server_events[1]
    assert isinstance(established, SessionEstablished)
    assert established.hello == pair.client.local.hello


def test_messages_flow_both_ways_and_large_ones_are_reassembled() -> None:
    pair = open_pair()
    tx = KIT.transfer(CHAIN, 0, 1, 5, 1, 0)
    big = BlockMessage(sample_block(1_500))  # ~0.5 MB: several Noise messages
    pair.client.send(TransactionMessage(tx))
    pair.server.send(big)
    pair.pump()
    assert [e.message for e in pair.server_events if isinstance(e, MessageArrived)] == [
        TransactionMessage(tx)
    ]
    arrived = [e for e in pair.client_events if isinstance(e, MessageArrived)]
    assert [e.message for e in arrived] == [big]
    assert arrived[0].size > 4 * MAX_FRAME_PLAINTEXT


@pytest.mark.parametrize("seed", range(3))
def test_any_split_of_the_stream_delivers_every_message_in_order(seed: int) -> None:
    """Frames cut anywhere, records across frames, small and large messages interleaved:
    each arrives once, in order, and the record buffer goes back to its usual size."""
    rng = random.Random(seed)
    pair = open_pair()
    sent: list[Message] = []
    wire = b""
    for index in range(12):
        message: Message
        if index % 4 == 3:
            message = BlockMessage(sample_block(rng.choice((50, 400, 3_000))))
        else:
            message = TransactionMessage(KIT.transfer(CHAIN, 0, 1, 5, 1, index))
        sent.append(message)
        pair.client.send(message)
        if rng.random() < 0.5:  # a tick: what is queued so far goes out together
            wire += pair.client.data_to_send()
    wire += pair.client.data_to_send()
    position = 0
    while position < len(wire):
        step = rng.choice((1, 2, 3, 100, 4_096, 70_000, 300_000))
        pair.server.receive_data(memoryview(wire)[position : position + step], T0)
        position += step
    arrived = [e.message for e in pair.server.events() if isinstance(e, MessageArrived)]
    assert arrived == sent
    assert not pair.server.closed
    assert len(pair.server._records) <= RECORD_BUFFER_SIZE


def test_a_message_within_a_transaction_of_the_maximum_size_arrives() -> None:
    pair = open_pair()
    block = sample_block(11_000)  # ~4.1 MB: too large by a few hundred transactions
    size = len(MESSAGE_CODEC.encode(BlockMessage(block)))
    count = len(block.transactions)
    while size > MAX_MESSAGE_SIZE:
        count -= 1
        big = BlockMessage(Block(block.header, block.transactions[:count]))
        size = len(MESSAGE_CODEC.encode(big))
    assert size > MAX_MESSAGE_SIZE - 400  # within one transaction of the limit
    pair.client.send(big)
    pair.server.receive_data(pair.client.data_to_send(), T0)
    assert [e.message for e in pair.server.events() if isinstance(e, MessageArrived)] == [big]
    assert len(pair.server._records) <= RECORD_BUFFER_SIZE


def frame_lengths(wire: bytes) -> list[int]:
    lengths, position = [], 0
    while position < len(wire):
        lengths.append(int.from_bytes(wire[position : position + 2], "big"))
        position += 2 + lengths[-1]
    assert position == len(wire)
    return lengths


def test_written_frames_carry_at_most_the_seal_size() -> None:
    pair = open_pair()
    big = BlockMessage(sample_block(1_500))
    pair.client.send(big)
    lengths = frame_lengths(pair.client.data_to_send())
    assert len(lengths) > 4
    assert set(lengths[:-1]) == {SEAL_FRAME_PLAINTEXT + 16}
    assert lengths[-1] <= SEAL_FRAME_PLAINTEXT + 16


@pytest.mark.parametrize("step", [65_537, 100_000, 1_000, 1])
def test_frames_of_the_largest_size_a_peer_may_write_are_read(step: int) -> None:
    """Another implementation may fill every frame to 65,535 bytes; we write smaller ones."""
    pair = open_pair()
    message = BlockMessage(sample_block(700))
    raw = MESSAGE_CODEC.encode(message)
    records = (len(raw).to_bytes(4, "big") + raw) * 3
    cipher = pair.client._send_cipher
    assert cipher is not None
    wire = b""
    for start in range(0, len(records), MAX_FRAME_PLAINTEXT):
        frame = cipher.encrypt_with_ad(b"", records[start : start + MAX_FRAME_PLAINTEXT])
        wire += len(frame).to_bytes(2, "big") + frame
    assert max(frame_lengths(wire)) == 65_535
    for position in range(0, len(wire), step):
        pair.server.receive_data(wire[position : position + step], T0)
    arrived = [e.message for e in pair.server.events() if isinstance(e, MessageArrived)]
    assert arrived == [message] * 3
    assert not pair.server.closed


def test_small_messages_written_together_share_one_frame() -> None:
    pair = open_pair()
    for nonce in range(10):
        pair.client.send(TransactionMessage(KIT.transfer(CHAIN, 0, 1, 5, 1, nonce)))
    wire = pair.client.data_to_send()
    frame_length = int.from_bytes(wire[:2], "big")
    assert len(wire) == 2 + frame_length  # one Noise message carries all ten
    pair.server.receive_data(wire, T0)
    assert sum(isinstance(e, MessageArrived) for e in pair.server.events()) == 10


def test_a_tampered_frame_ends_the_session() -> None:
    pair = open_pair()
    pair.client.send(TransactionMessage(KIT.transfer(CHAIN, 0, 1, 5, 1, 0)))
    wire = bytearray(pair.client.data_to_send())
    wire[10] ^= 1
    pair.server.receive_data(bytes(wire), T0)
    ended = closed(pair.server.events())
    assert not ended.by_peer
    assert pair.server.closed


@pytest.mark.parametrize("fault", ["replay", "reorder"])
def test_replayed_or_reordered_frames_end_the_session(fault: str) -> None:
    pair = open_pair()
    frames = []
    for nonce in range(2):
        pair.client.send(TransactionMessage(KIT.transfer(CHAIN, 0, 1, 5, 1, nonce)))
        frames.append(pair.client.data_to_send())
    sequence = [frames[0], frames[0]] if fault == "replay" else [frames[1], frames[0]]
    for frame in sequence:
        pair.server.receive_data(frame, T0)
    events = pair.server.events()
    assert pair.server.closed
    delivered = [e for e in events if isinstance(e, MessageArrived)]
    assert len(delivered) == (1 if fault == "replay" else 0)


def test_a_forged_identity_signature_ends_the_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = make_pair()
    # The server signs some other static key: the proof does not bind its Noise key.
    monkeypatch.setattr(
        session_module,
        "make_identity_proof",
        lambda identity, static: make_identity_proof(identity, bytes(32)),
    )
    pair.pump()
    ended = closed(pair.client_events)
    assert "identity signature" in ended.reason
    assert pair.client.remote_identity is None


def test_a_missing_identity_payload_ends_the_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = make_pair()
    monkeypatch.setattr(session_module, "make_identity_proof", lambda identity, static: b"")
    pair.pump()
    assert "missing the identity proof" in closed(pair.client_events).reason


def test_a_truncated_handshake_ends_cleanly_on_eof() -> None:
    pair = make_pair()
    pair.server.receive_data(pair.client.data_to_send(), T0)
    message_2 = pair.server.data_to_send()
    pair.client.receive_data(message_2[: len(message_2) // 2], T0)
    pair.client.receive_eof()
    ended = closed(pair.client.events())
    assert ended.by_peer
    assert "mid-message" in ended.reason


def test_an_oversized_length_ends_the_session_without_buffering_it() -> None:
    pair = open_pair()
    pair.client._plain_out += (MAX_MESSAGE_SIZE + 1).to_bytes(4, "big")  # a lying header
    pair.server.receive_data(pair.client.data_to_send(), T0)
    assert "exceeds" in closed(pair.server.events()).reason


def test_wrong_chain_is_refused_with_a_reason_on_both_sides() -> None:
    client_key, server_key = SecretKey.generate(), SecretKey.generate()
    pair = Pair(
        make_session(client_key, initiator=True),
        make_session(server_key, initiator=False, chain=bytes(32)),
        [],
        [],
    )
    pair.pump()
    assert closed(pair.server_events).code is GoodbyeCode.WRONG_CHAIN
    mine, theirs = closed(pair.client_events), closed(pair.server_events)
    assert "different chain" in mine.reason
    assert "different chain" in theirs.reason
    assert sum(isinstance(e, SessionEstablished) for e in pair.client_events) == 0


def test_an_old_protocol_version_is_refused() -> None:
    client_key = SecretKey.generate()
    pair = Pair(
        make_session(client_key, initiator=True, hello=hello_for(client_key, version=0)),
        make_session(SecretKey.generate(), initiator=False),
        [],
        [],
    )
    pair.pump()
    assert closed(pair.server_events).code is GoodbyeCode.INCOMPATIBLE_VERSION


def test_a_non_member_gets_no_application_byte() -> None:
    server_key = SecretKey.generate()
    pair = Pair(
        make_session(SecretKey.generate(), initiator=True),
        make_session(server_key, initiator=False, members=frozenset({server_key.public_key})),
        [],
        [],
    )
    pair.server.receive_data(pair.client.data_to_send(), T0)  # message 1
    pair.client.receive_data(pair.server.data_to_send(), T0)  # message 2
    pair.server.receive_data(pair.client.data_to_send(), T0)  # message 3 and the hello
    assert pair.server.data_to_send() == b""  # not even a Goodbye
    assert "not a member" in closed(pair.server.events()).reason


def test_a_member_initiator_refuses_a_non_member_responder() -> None:
    client_key = SecretKey.generate()
    pair = Pair(
        make_session(client_key, initiator=True, members=frozenset({client_key.public_key})),
        make_session(SecretKey.generate(), initiator=False),
        [],
        [],
    )
    pair.server.receive_data(pair.client.data_to_send(), T0)
    pair.client.receive_data(pair.server.data_to_send(), T0)
    assert pair.client.data_to_send() == b""  # message 3 is never sent
    assert "not a member" in closed(pair.client.events()).reason


def test_connecting_to_ourselves_is_refused() -> None:
    key = SecretKey.generate()
    pair = Pair(make_session(key, initiator=True), make_session(key, initiator=False), [], [])
    pair.pump()
    assert "ourselves" in closed(pair.client_events).reason


def test_a_non_empty_first_message_is_refused() -> None:
    client = make_session(SecretKey.generate(), initiator=True)
    server = make_session(SecretKey.generate(), initiator=False)
    client.data_to_send()
    from meshchain.core.transport.noise import HandshakeState

    rogue = HandshakeState.from_protocol_name(
        session_module.PROTOCOL_NAME,
        initiator=True,
        prologue=session_module.PROLOGUE,
        s=new_noise_static_key(),
    )
    message = rogue.write_message(b"hello")
    server.receive_data(len(message).to_bytes(2, "big") + message, T0)
    assert "empty payload" in closed(server.events()).reason


def test_ping_measures_round_trip_time_at_once_and_then_every_interval() -> None:
    pair = open_pair()
    interval = pair.client.timeouts.ping_interval
    assert pair.client.get_timer() == pytest.approx(T0)  # the first ping is due on opening
    pair.client.handle_timer(T0)
    pair.pump(T0 + 0.25)
    assert pair.client.get_timer() == pytest.approx(T0 + interval)
    pair.client.handle_timer(T0 + interval)
    pair.pump(T0 + interval + 0.5)
    rtts = [e.rtt for e in pair.client_events if isinstance(e, PongReceived)]
    assert rtts == [pytest.approx(0.25), pytest.approx(0.5)]


def test_handshake_timeout_closes_a_staller() -> None:
    server = make_session(SecretKey.generate(), initiator=False)
    deadline = server.get_timer()
    assert deadline is not None
    assert deadline == pytest.approx(T0 + server.timeouts.handshake)
    server.handle_timer(deadline - 0.1)
    assert not server.closed
    server.handle_timer(deadline)
    assert "timed out" in closed(server.events()).reason


def test_silence_after_the_handshake_closes_the_session() -> None:
    pair = open_pair()
    timeouts = SessionTimeouts()
    pair.server.handle_timer(T0 + timeouts.inactivity + 1)
    assert "silent" in closed(pair.server.events()).reason


def test_goodbye_reason_reaches_the_peer() -> None:
    pair = open_pair()
    pair.client.close(GoodbyeCode.SHUTTING_DOWN, "maintenance")
    pair.pump()
    ended = closed(pair.server_events)
    assert ended.by_peer
    assert ended.code is GoodbyeCode.SHUTTING_DOWN
    assert "maintenance" in ended.reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_garbage_never_raises(garbage: bytes, initiator: bool) -> None:
    session = make_session(SecretKey.generate(), initiator=initiator)
    session.data_to_send()
    session.receive_data(garbage, T0)
    session.receive_eof()
    assert session.closed
    assert isinstance(session.events()[-1], SessionClosed)

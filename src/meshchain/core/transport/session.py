"""One secure session over one byte stream: Noise XX, identity binding, hello, ping.

Sans-IO, in the manner of h11 and aioquic: feed bytes with `receive_data(data, now)`,
take bytes with `chunks_to_send()` (or `data_to_send()`), read what happened from
`events()`, and drive time with `handle_timer(now)` at `get_timer()`. Bad bytes from
the peer never raise: they close the session with a reason (a `SessionClosed` event),
which costs us one connection.

Wire format (docs/protocol.md): every Noise message, handshake or transport, is preceded
by its length as 2 bytes big-endian. Inside the encrypted stream, each application message
is a 4-byte big-endian length and its canonical msgpack encoding; records may span Noise
messages and one Noise message may carry several records, so small messages written in
the same tick share one encryption.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import cast

import msgspec

from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.transport.identity import (
    check_identity_proof,
    make_identity_proof,
    noise_public_key,
)
from meshchain.core.transport.noise import (
    MAX_NOISE_MESSAGE,
    BytesLike,
    CipherState,
    HandshakeState,
)
from meshchain.core.wire.codec import MAX_MESSAGE_SIZE
from meshchain.core.wire.messages import (
    MESSAGE_CODEC,
    AnyMessage,
    Goodbye,
    GoodbyeCode,
    Hello,
    Message,
    Ping,
    Pong,
)
from meshchain.errors import DecodeError, LocalProtocolError, RemoteProtocolError

PROTOCOL_NAME = "Noise_XX_25519_ChaChaPoly_SHA256"
PROLOGUE = b"meshchain/1"
PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1
LENGTH_PREFIX_SIZE = 2
AEAD_TAG_SIZE = 16
MAX_FRAME_PLAINTEXT = MAX_NOISE_MESSAGE - AEAD_TAG_SIZE  # the most a frame may carry
# The most a frame we write carries: 511 * 128 bytes. A peer accepts any size up to
# MAX_FRAME_PLAINTEXT, but OpenSSL's ChaCha20-Poly1305 (the OpenSSL 4.0 of `cryptography`
# 50, on an AVX-512 AMD EPYC) runs ~30% slower on the whole message when its length is
# 64-127 bytes past a multiple of 128: ~19.5 us for 65,519 bytes, ~14.7 us for 65,408.
SEAL_FRAME_PLAINTEXT = 511 * 128
RECORD_HEADER_SIZE = 4
# The record buffer a session keeps (two frames' worth); larger records grow it for a while.
RECORD_BUFFER_SIZE = 2 * MAX_FRAME_PLAINTEXT
# The most a record buffer holds: the largest record, less a byte, and one more frame.
MAX_RECORD_BUFFER = RECORD_HEADER_SIZE + MAX_MESSAGE_SIZE + MAX_FRAME_PLAINTEXT
# Frames up to this size with no partial record before them are decrypted to a bytes
# object and read from it: for small messages that beats views of the record buffer.
SMALL_FRAME = 4096
# CometBFT's handshake_timeout is 20 s; the hello must arrive within it too.
HANDSHAKE_TIMEOUT = 20.0
# Bitcoin Core: PING_INTERVAL 2 minutes, TIMEOUT_INTERVAL 20 minutes of silence.
PING_INTERVAL = 120.0
INACTIVITY_TIMEOUT = 20 * 60.0
# The first ping goes out as soon as the session opens, as Bitcoin Core's does: the
# round-trip time is known within a moment of connecting (eviction and `net_info` use it).
FIRST_PING_DELAY = 0.0
# Sessions never rekey: a 64-bit nonce cannot wrap at any real message rate, and the
# session ends long before (see docs/protocol.md). This bounds a session anyway.
MAX_FRAMES_PER_SESSION = 2**63


# Messages the session answers itself; every other one goes to the node once open.
_SESSION_MESSAGES: frozenset[type] = frozenset({Goodbye, Hello, Ping, Pong})


class SessionState(enum.Enum):
    HANDSHAKING = "handshaking"
    AWAITING_HELLO = "awaiting_hello"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SessionTimeouts:
    handshake: float = HANDSHAKE_TIMEOUT
    ping_interval: float = PING_INTERVAL
    inactivity: float = INACTIVITY_TIMEOUT
    first_ping: float = FIRST_PING_DELAY  # after the session opens


@dataclass(frozen=True, slots=True)
class LocalPeer:
    """Who we are on a session: our keys and the hello we send."""

    identity: SecretKey
    noise_static: bytes  # X25519 private key, raw 32 bytes
    hello: Hello


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """Whom we talk to: our chain, and in consortium or private mode the member keys."""

    chain_id: bytes
    members: frozenset[bytes] | None = None  # None: an open (public) network


# --- events ------------------------------------------------------------------------------


class HandshakeCompleted(msgspec.Struct, frozen=True):
    remote_identity: bytes


class SessionEstablished(msgspec.Struct, frozen=True):
    hello: Hello


class MessageArrived(msgspec.Struct, frozen=True):
    message: Message
    size: int


class PongReceived(msgspec.Struct, frozen=True):
    rtt: float


class SessionClosed(msgspec.Struct, frozen=True):
    reason: str
    by_peer: bool
    code: GoodbyeCode | None = None


SessionEvent = (
    HandshakeCompleted | SessionEstablished | MessageArrived | PongReceived | (SessionClosed)
)


def _decode_record(raw: bytes | memoryview) -> AnyMessage:
    """A record's message; an undecodable one is the peer's protocol violation."""
    try:
        return MESSAGE_CODEC.decode(raw)
    except DecodeError as exc:
        raise RemoteProtocolError(f"undecodable message: {exc.reason}") from None


class SecureSession:
    def __init__(
        self,
        local: LocalPeer,
        policy: AdmissionPolicy,
        *,
        initiator: bool,
        now: float,
        rng: random.Random,
        timeouts: SessionTimeouts = SessionTimeouts(),
        verifier: SignatureVerifier | None = None,
        expected_identity: bytes | None = None,
    ) -> None:
        self.local = local
        self.policy = policy
        self.initiator = initiator
        self.timeouts = timeouts
        self._inactivity = timeouts.inactivity
        self.expected_identity = expected_identity
        self.state = SessionState.HANDSHAKING
        self.closed = False  # state is CLOSED (an attribute: it is read on every record)
        self.remote_identity: bytes | None = None
        self.remote_hello: Hello | None = None
        self.rtt: float | None = None
        self._rng = rng
        self._verifier = verifier or SignatureVerifier()
        self._handshake: HandshakeState | None = HandshakeState.from_protocol_name(
            PROTOCOL_NAME, initiator=initiator, prologue=PROLOGUE, s=local.noise_static
        )
        self._static_public = noise_public_key(local.noise_static)
        self._send_cipher: CipherState | None = None
        self._receive_cipher: CipherState | None = None
        self._inbound = bytearray()  # a frame split between reads (allocated when needed)
        self._inbound_size = 0
        self._records = bytearray()  # decrypted records: pending ones in [start:end]
        self._records_start = self._records_end = 0
        self._plain_out = bytearray()  # records not yet encrypted (less than a frame)
        self._wire_out: list[bytes] = []
        self._events: list[SessionEvent] = []
        self._handshake_deadline = now + timeouts.handshake
        self._last_received = now
        self._next_ping = now + timeouts.ping_interval
        self._ping_nonce: int | None = None
        self._ping_sent_at = 0.0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.pongs_received = 0
        if initiator:
            self._write_handshake(b"")

    # --- the driver's calls ---------------------------------------------------------

    def events(self) -> list[SessionEvent]:
        """The events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def receive_data(self, data: BytesLike, now: float) -> None:
        """Take bytes from the stream; `data` may be a view the caller reuses after this.

        Whole frames are read in place, from `data` itself; only a frame split between
        two reads is copied, its missing bytes taken from the next read, and the rest of
        that read is again read in place.
        """
        if self.closed or not data:
            return
        size = len(data)
        self.bytes_received += size
        self._last_received = now
        if (
            LENGTH_PREFIX_SIZE < size <= SMALL_FRAME
            and size - LENGTH_PREFIX_SIZE == ((data[0] << 8) | data[1])
            and not self._inbound_size
            and self._handshake is None
            and self._records_start == self._records_end
        ):
            # One whole small frame: what a quiet link reads each time (a ping, a vote).
            try:
                self._open_small(data[LENGTH_PREFIX_SIZE:], now)
            except RemoteProtocolError as error:
                self._fail(str(error), GoodbyeCode.PROTOCOL_VIOLATION)
            return
        with memoryview(data) as stream:
            position = 0
            try:
                if self._inbound_size:
                    position = self._complete_frame(stream, now)
                while size - position >= LENGTH_PREFIX_SIZE and not self.closed:
                    end = (
                        position
                        + LENGTH_PREFIX_SIZE
                        + ((stream[position] << 8) | stream[position + 1])
                    )
                    if end > size:
                        break
                    self._on_frame(stream[position + LENGTH_PREFIX_SIZE : end], now)
                    position = end
            except RemoteProtocolError as error:
                self._fail(str(error), GoodbyeCode.PROTOCOL_VIOLATION)
            if position < size and not self.closed:  # the start of a frame: keep it
                tail = size - position
                if not self._inbound:
                    self._inbound = bytearray(LENGTH_PREFIX_SIZE + MAX_NOISE_MESSAGE)
                self._inbound[:tail] = stream[position:]
                self._inbound_size = tail

    def _complete_frame(self, stream: memoryview, now: float) -> int:
        """Add to the frame begun in an earlier read what `stream` has of it; handle the
        frame if it is now whole. Return how much of `stream` was taken."""
        buffer, have = self._inbound, self._inbound_size
        taken = 0
        if have < LENGTH_PREFIX_SIZE:
            taken = min(LENGTH_PREFIX_SIZE - have, len(stream))
            buffer[have : have + taken] = stream[:taken]
            have += taken
        if have >= LENGTH_PREFIX_SIZE:
            end = LENGTH_PREFIX_SIZE + ((buffer[0] << 8) | buffer[1])
            more = min(end - have, len(stream) - taken)
            buffer[have : have + more] = stream[taken : taken + more]
            have, taken = have + more, taken + more
            if have == end:
                self._inbound_size = 0
                with memoryview(buffer) as view:
                    self._on_frame(view[LENGTH_PREFIX_SIZE:end], now)
                return taken
        self._inbound_size = have
        return taken

    def receive_eof(self) -> None:
        """The peer closed its side: whatever was half-received is lost."""
        if self.closed:
            return
        mid_record = self._records_end > self._records_start
        partial = " mid-message" if self._inbound_size or mid_record else ""
        self._finish(f"connection closed by peer{partial}", by_peer=True)

    def send(self, message: AnyMessage, encoded: bytes | None = None) -> None:
        """Queue a message; `encoded` is its canonical encoding when the caller has it
        already (a message sent to many peers is encoded once, not once per peer)."""
        if self.state is not SessionState.OPEN:
            raise LocalProtocolError(f"cannot send {type(message).__name__} while {self.state}")
        self._queue(message, encoded)

    def data_to_send(self) -> bytes:
        """Everything to write now, as one string (`chunks_to_send`, joined)."""
        return b"".join(self.chunks_to_send())

    def chunks_to_send(self) -> list[bytes]:
        """Everything to write now: handshake bytes and encrypted frames, in order.

        For a vectored write (`transport.writelines`): frames are not copied into one
        buffer, whose fresh pages would cost the kernel a fault each at bulk rates.
        """
        plain, chunks = self._plain_out, self._wire_out
        if plain and self._send_cipher is not None:
            if len(plain) <= SEAL_FRAME_PLAINTEXT:  # the usual case: it all fits one frame
                frame = self._send_cipher.encrypt_with_ad(b"", plain)
                plain.clear()
                size = len(frame)
                chunks += (size.to_bytes(LENGTH_PREFIX_SIZE, "big"), frame)
                self.bytes_sent += LENGTH_PREFIX_SIZE + size
            else:
                self._seal(len(plain))
        self._wire_out = []
        return chunks

    def _seal(self, size: int) -> None:
        """Encrypt the first `size` bytes of queued records as frames of the wire stream."""
        plain = self._plain_out
        encrypt = self._send_cipher.encrypt_with_ad  # type: ignore[union-attr]
        with memoryview(plain) as view:
            for start in range(0, size, SEAL_FRAME_PLAINTEXT):
                frame = encrypt(b"", view[start : min(start + SEAL_FRAME_PLAINTEXT, size)])
                self._wire_out.append(len(frame).to_bytes(LENGTH_PREFIX_SIZE, "big"))
                self._wire_out.append(frame)
                self.bytes_sent += LENGTH_PREFIX_SIZE + len(frame)
        del plain[:size]

    def close(self, code: GoodbyeCode = GoodbyeCode.NORMAL, reason: str = "closing") -> None:
        """End the session; the peer gets a Goodbye if we have a channel to send it."""
        if self.closed:
            return
        if self._send_cipher is not None:
            self._queue(Goodbye(int(code), reason[:256]))
        self._finish(reason, by_peer=False, code=code)

    def get_timer(self) -> float | None:
        # Asked after every read: the open session first, with no call.
        state = self.state
        if state is SessionState.OPEN:
            inactivity = self._last_received + self._inactivity
            return self._next_ping if self._next_ping < inactivity else inactivity
        if state is SessionState.CLOSED:
            return None
        return min(self._handshake_deadline, self._last_received + self._inactivity)

    def handle_timer(self, now: float) -> None:
        if self.closed:
            return
        if self.state is not SessionState.OPEN and now >= self._handshake_deadline:
            self._fail("handshake timed out", GoodbyeCode.TIMEOUT)
        elif now >= self._last_received + self.timeouts.inactivity:
            self._fail("peer silent too long", GoodbyeCode.TIMEOUT)
        elif self.state is SessionState.OPEN and now >= self._next_ping:
            self._next_ping = now + self.timeouts.ping_interval
            if self._ping_nonce is None:
                self._ping_nonce = self._rng.getrandbits(63)
                self._ping_sent_at = now
                self._queue(Ping(self._ping_nonce))

    # --- handshake --------------------------------------------------------------------

    def _write_handshake(self, payload: bytes) -> None:
        assert self._handshake is not None
        message = self._handshake.write_message(payload)
        self._wire_out.append(len(message).to_bytes(LENGTH_PREFIX_SIZE, "big") + message)
        self.bytes_sent += LENGTH_PREFIX_SIZE + len(message)

    def _on_frame(self, frame: memoryview, now: float) -> None:
        if self._handshake is not None:
            self._on_handshake_message(bytes(frame))
            return
        assert self._receive_cipher is not None
        if len(frame) <= SMALL_FRAME and self._records_start == self._records_end:
            self._open_small(frame, now)
            return
        size = len(frame) - AEAD_TAG_SIZE
        if size < 0:
            raise RemoteProtocolError(f"frame of {len(frame)} bytes is shorter than its tag")
        buffer, end = self._records, self._records_end
        if end + size > len(buffer):
            buffer, end = self._make_record_space(size), self._records_end
        # The buffer is never resized, only replaced, so views of it are always safe.
        view = memoryview(buffer)
        self._receive_cipher.decrypt_into(b"", frame, view[end : end + size])
        end += size
        consumed = self._read_records(view, self._records_start, end, now)
        if self.closed:
            return
        if consumed < end:
            self._records_start, self._records_end = consumed, end
        else:  # all read: start again at the front, in a buffer of the usual size
            self._records_start = self._records_end = 0
            if len(buffer) > RECORD_BUFFER_SIZE:
                self._records = bytearray(RECORD_BUFFER_SIZE)

    def _open_small(self, frame: BytesLike, now: float) -> None:
        """A small frame with no record pending before it: read from the plaintext itself
        (no copy into the record buffer, fewer views); only a trailing partial record is
        kept."""
        plaintext = self._receive_cipher.decrypt_with_ad(b"", frame)  # type: ignore[union-attr]
        size = len(plaintext)
        if size - RECORD_HEADER_SIZE == int.from_bytes(plaintext[:RECORD_HEADER_SIZE], "big"):
            # Exactly one record, the usual small frame: no loop, no tail.
            message = _decode_record(plaintext[RECORD_HEADER_SIZE:])
            self._on_message(message, size - RECORD_HEADER_SIZE, now)
            return
        consumed = self._read_records(plaintext, 0, size, now)
        tail = size - consumed
        if tail and not self.closed:
            self._make_record_space(tail)[:tail] = memoryview(plaintext)[consumed:]
            self._records_end = tail

    def _make_record_space(self, size: int) -> bytearray:
        """Room for `size` more bytes after the pending records: move them to the front,
        or grow the buffer (doubling, so a 4 MB record is not copied once per frame)."""
        buffer, start, end = self._records, self._records_start, self._records_end
        pending = end - start
        if pending + size > len(buffer):
            capacity = max(pending + size, min(2 * len(buffer), MAX_RECORD_BUFFER))
            fresh = bytearray(max(capacity, RECORD_BUFFER_SIZE))
            fresh[:pending] = memoryview(buffer)[start:end]
            buffer = self._records = fresh
        else:
            buffer[:pending] = buffer[start:end]
        self._records_start, self._records_end = 0, pending
        return buffer

    def _read_records(
        self, records: bytes | memoryview, position: int, size: int, now: float
    ) -> int:
        """Decode and handle every whole record in records[position:size]; return the
        position after the last one handled."""
        while size - position >= RECORD_HEADER_SIZE and not self.closed:
            start = position + RECORD_HEADER_SIZE
            length = int.from_bytes(records[position:start], "big")
            if length > MAX_MESSAGE_SIZE:
                raise RemoteProtocolError(f"message of {length} bytes exceeds {MAX_MESSAGE_SIZE}")
            if start + length > size:
                break
            position = start + length
            self._on_message(_decode_record(records[start:position]), length, now)
        return position

    def _on_handshake_message(self, frame: bytes) -> None:
        handshake = self._handshake
        assert handshake is not None
        payload = handshake.read_message(frame)
        if not self.initiator and self.remote_identity is None and handshake.remote_static is None:
            # Message 1 (-> e): the initiator's first message carries an empty payload.
            if payload:
                raise RemoteProtocolError("handshake message 1 must have an empty payload")
            self._write_handshake(make_identity_proof(self.local.identity, self._static_public))
            return
        remote_static = handshake.remote_static
        assert remote_static is not None
        identity = check_identity_proof(payload, remote_static, self._verifier)
        refusal = self._refusal(identity)
        if refusal is not None:
            # Not one of us: end before any application byte is sent, without a word.
            self._finish(refusal, by_peer=False, code=GoodbyeCode.MISBEHAVIOUR)
            return
        self.remote_identity = identity
        if self.initiator:
            self._write_handshake(make_identity_proof(self.local.identity, self._static_public))
        if not handshake.is_complete:
            raise RemoteProtocolError("handshake did not complete after message 3")
        self._send_cipher, self._receive_cipher = handshake.split()
        self._handshake = None
        self.state = SessionState.AWAITING_HELLO
        self._events.append(HandshakeCompleted(identity))
        self._queue(self.local.hello)

    def _refusal(self, identity: bytes) -> str | None:
        if identity == self.local.identity.public_key:
            return "connected to ourselves"
        if self.expected_identity is not None and identity != self.expected_identity:
            return f"expected node {self.expected_identity.hex()[:16]}, met {identity.hex()[:16]}"
        members = self.policy.members
        if members is not None and identity not in members:
            return f"node {identity.hex()[:16]} is not a member of this network"
        return None

    # --- messages ---------------------------------------------------------------------

    def _on_message(self, message: AnyMessage, size: int, now: float) -> None:
        if self.state is SessionState.OPEN and type(message) not in _SESSION_MESSAGES:
            self._events.append(MessageArrived(cast(Message, message), size))
            return
        if isinstance(message, Goodbye):
            code = (
                GoodbyeCode(message.code)
                if message.code in GoodbyeCode._value2member_map_
                else None
            )
            self._finish(f"peer said goodbye: {message.reason}", by_peer=True, code=code)
        elif self.state is SessionState.AWAITING_HELLO:
            if not isinstance(message, Hello):
                raise RemoteProtocolError(f"expected Hello first, got {type(message).__name__}")
            self._on_hello(message)
        elif isinstance(message, Hello):
            raise RemoteProtocolError("a second Hello")
        elif isinstance(message, Ping):
            self._queue(Pong(message.nonce))
        elif isinstance(message, Pong):
            if message.nonce == self._ping_nonce:
                self._ping_nonce = None
                self.rtt = now - self._ping_sent_at
                self.pongs_received += 1
                self._events.append(PongReceived(self.rtt))
        else:
            self._events.append(MessageArrived(message, size))

    def _on_hello(self, hello: Hello) -> None:
        if hello.protocol_version < MIN_PROTOCOL_VERSION:
            self.close(
                GoodbyeCode.INCOMPATIBLE_VERSION,
                f"protocol version {hello.protocol_version} is older than {MIN_PROTOCOL_VERSION}",
            )
        elif hello.chain_id != self.policy.chain_id:
            self.close(
                GoodbyeCode.WRONG_CHAIN,
                f"different chain: peer {hello.chain_id.hex()[:16]}, "
                f"ours {self.policy.chain_id.hex()[:16]}",
            )
        elif hello.node_id != self.remote_identity:
            self.close(GoodbyeCode.BAD_HELLO, "hello node id differs from the handshake identity")
        else:
            self.remote_hello = hello
            self.state = SessionState.OPEN
            self._next_ping = self._last_received + self.timeouts.first_ping
            self._events.append(SessionEstablished(hello))

    def _queue(self, message: AnyMessage, encoded: bytes | None = None) -> None:
        plain = self._plain_out
        header = len(plain)
        plain += bytes(RECORD_HEADER_SIZE)  # the length, filled in once known
        if encoded is None:
            size = MESSAGE_CODEC.encode_onto(message, plain)
        else:
            plain += encoded
            size = len(encoded)
        if size > MAX_MESSAGE_SIZE:
            del plain[header:]
            raise LocalProtocolError(f"message of {size} bytes exceeds {MAX_MESSAGE_SIZE}")
        plain[header : header + RECORD_HEADER_SIZE] = size.to_bytes(RECORD_HEADER_SIZE, "big")
        if len(plain) >= SEAL_FRAME_PLAINTEXT and self._send_cipher is not None:
            # Seal whole frames now: the queue stays under one frame however much is sent.
            self._seal(len(plain) - len(plain) % SEAL_FRAME_PLAINTEXT)

    # --- ending -----------------------------------------------------------------------

    def _fail(self, reason: str, code: GoodbyeCode) -> None:
        self.close(code, reason)

    def _finish(self, reason: str, *, by_peer: bool, code: GoodbyeCode | None = None) -> None:
        self.state = SessionState.CLOSED
        self.closed = True
        self._handshake = None
        # New buffers, not clear(): the read loops may hold views of the old ones.
        self._inbound = bytearray()
        self._inbound_size = 0
        self._records = bytearray()
        self._records_start = self._records_end = 0
        self._events.append(SessionClosed(reason, by_peer, code))

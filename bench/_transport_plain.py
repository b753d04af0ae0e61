"""The baseline for bench/transport.py: `SecureSession`'s records with no Noise under them.

`PlainSession` has the driver-facing interface of `SecureSession` and treats records the
same way (`[4-byte big-endian length][msgpack]`, accumulated in a bytearray, each one
copied out and decoded with `MESSAGE_CODEC`), so swapping one for the other under the
same protocol class measures only what Noise, its 2-byte framing and the handshake cost.
"""

from __future__ import annotations

from meshchain.core.transport.session import (
    RECORD_HEADER_SIZE,
    MessageArrived,
    SessionClosed,
    SessionEstablished,
    SessionEvent,
)
from meshchain.core.wire.codec import MAX_MESSAGE_SIZE
from meshchain.core.wire.messages import (
    MESSAGE_CODEC,
    AnyMessage,
    BlockMessage,
    GoodbyeCode,
    Hello,
    TransactionMessage,
)
from meshchain.errors import DecodeError, LocalProtocolError


class PlainSession:
    """Records straight on TCP: open at once (no handshake, no hello on the wire)."""

    def __init__(self, hello: Hello) -> None:
        self.closed = False
        self._records = bytearray()
        self._out: list[bytes] = []
        self._events: list[SessionEvent] = [SessionEstablished(hello)]

    def events(self) -> list[SessionEvent]:
        events, self._events = self._events, []
        return events

    def receive_data(self, data: bytes, now: float) -> None:
        """As `SecureSession._on_frame` does with each decrypted frame."""
        if self.closed or not data:
            return
        records = self._records
        records += data
        while len(records) >= RECORD_HEADER_SIZE and not self.closed:
            length = int.from_bytes(records[:RECORD_HEADER_SIZE], "big")
            if length > MAX_MESSAGE_SIZE:
                self._finish(f"message of {length} bytes exceeds {MAX_MESSAGE_SIZE}", False)
                return
            end = RECORD_HEADER_SIZE + length
            if len(records) < end:
                break
            raw = bytes(records[RECORD_HEADER_SIZE:end])
            del records[:end]
            try:
                message = MESSAGE_CODEC.decode(raw)
            except DecodeError as exc:
                self._finish(f"undecodable message: {exc.reason}", False)
                return
            if isinstance(message, TransactionMessage | BlockMessage):
                self._events.append(MessageArrived(message, len(raw)))

    def receive_eof(self) -> None:
        if not self.closed:
            self._finish("connection closed by peer", True)

    def send(self, message: AnyMessage, encoded: bytes | None = None) -> None:
        """As `SecureSession.send`: encode (unless given), check the size, append one
        record."""
        if self.closed:
            raise LocalProtocolError("cannot send on a closed session")
        raw = MESSAGE_CODEC.encode(message) if encoded is None else encoded
        if len(raw) > MAX_MESSAGE_SIZE:
            raise LocalProtocolError(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_SIZE}")
        self._out.append(len(raw).to_bytes(RECORD_HEADER_SIZE, "big"))
        self._out.append(raw)

    def chunks_to_send(self) -> list[bytes]:
        """The queued records as they were encoded: written with no copy at all."""
        chunks, self._out = self._out, []
        return chunks

    def close(self, code: GoodbyeCode = GoodbyeCode.NORMAL, reason: str = "closing") -> None:
        if not self.closed:
            self._finish(reason, False)

    def get_timer(self) -> float | None:
        return None  # no handshake deadline and no keepalive: nothing to arm

    def handle_timer(self, now: float) -> None:
        pass

    def _finish(self, reason: str, by_peer: bool) -> None:
        self.closed = True
        self._records.clear()
        self._events.append(SessionClosed(reason, by_peer))

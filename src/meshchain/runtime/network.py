"""TCP for the node: a listener and a dialer driving one sans-IO `SecureSession` each.

Each connection receives through `asyncio.BufferedProtocol` into one preallocated buffer
(no per-read allocation by the transport) and writes at most once per loop tick: whatever
the session produced during the tick goes out in one `transport.write`, so small messages
share a system call and, inside the session, an encryption.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from meshchain import __version__
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.events import (
    ConnectionKind,
    Dial,
    DialFailed,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    PingMeasured,
    SessionViolation,
)
from meshchain.core.peers.address import AddressError, NetAddress, net_address, parse_address
from meshchain.core.peers.limits import (
    BandwidthLimits,
    GlobalBandwidth,
    TokenBucket,
    bandwidth_bucket,
)
from meshchain.core.transport.session import (
    PROTOCOL_VERSION,
    AdmissionPolicy,
    HandshakeCompleted,
    LocalPeer,
    MessageArrived,
    PongReceived,
    SecureSession,
    SessionClosed,
    SessionEstablished,
    SessionEvent,
    SessionTimeouts,
)
from meshchain.core.wire.messages import MESSAGE_CODEC, AnyMessage, GoodbyeCode, Hello
from meshchain.runtime.driver import NodeDriver

log = logging.getLogger("meshchain.p2p")

RECEIVE_BUFFER_SIZE = 256 * 1024
# A hard cap on open connections, handshaking ones included, so a connection flood
# cannot exhaust memory (Bitcoin's default -maxconnections is 125).
MAX_CONNECTIONS = 125
DIAL_TIMEOUT = 10.0
# A peer that stops reading is dropped once this much waits in its send buffer: two
# maximum-size messages (Bitcoin's -maxsendbuffer is 1 MB with smaller messages).
MAX_SEND_BUFFER = 8 * 1024 * 1024
USER_AGENT = f"meshchain/{__version__}"
# Ours: encodings of messages lately sent, remembered by identity up to this many bytes,
# so that one message object sent to many peers (an Inventory on the shared inbound
# timer, the answer to the same request from several of them, a block announcement)
# is encoded once rather than once per peer.
ENCODED_MEMO_BYTES = 2 * 1024 * 1024


@dataclass
class Traffic:
    """What crossed the wire, for `/metrics`: messages and their encoded bytes by message
    type (keyed by class: one dict lookup per message), and raw bytes (Noise framing and
    handshakes included) each way."""

    received: dict[type, list[int]] = field(default_factory=dict)  # type: [count, bytes]
    sent: dict[type, list[int]] = field(default_factory=dict)
    wire_received: int = 0
    wire_sent: int = 0

    @staticmethod
    def count(table: dict[type, list[int]], kind: type, size: int) -> None:
        entry = table.get(kind)
        if entry is None:
            table[kind] = [1, size]
        else:
            entry[0] += 1
            entry[1] += size


class PeerConnection(asyncio.BufferedProtocol):
    """One TCP connection and its session."""

    def __init__(
        self,
        service: P2PService,
        *,
        initiator: bool,
        label: str,
        expected_identity: bytes | None = None,
    ) -> None:
        self.service = service
        self.initiator = initiator
        self.label = label
        self.expected_identity = expected_identity
        self.dial: Dial | None = None  # the node's request, on connections it asked for
        self.remote: NetAddress | None = None
        self.peer_id: str | None = None
        self.session: SecureSession | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray(RECEIVE_BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        self._flush_scheduled = False
        rate = service.receive_limits.per_peer_bytes_per_second
        now = service.clock()
        self._receive_budget: TokenBucket | None = (
            None if rate is None else bandwidth_bucket(rate, now)
        )
        self._owed = 0  # bytes read while over budget: reading resumes once they are paid
        self._reading_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = 0.0

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peername = transport.get_extra_info("peername")
        if peername:
            self.label = f"{peername[0]}:{peername[1]}"
            try:
                self.remote = net_address(peername[0], peername[1])
            except AddressError:
                self.remote = None
        if not self.service.admit(self):
            transport.abort()
            if self.dial is not None:
                # The node waits for an answer to every Dial: without one the address
                # stays "in flight" and is not dialled again.
                self.service.dial_refused(self.dial, "connection limit reached")
            return
        self.session = self.service.new_session(self)
        self._after_activity()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        session = self.session
        if session is None:
            return
        self.service.traffic.wire_received += nbytes
        session.receive_data(self._view[:nbytes], self.service.clock())  # read, not kept
        self._after_activity()
        self._owed += nbytes
        self._pay_for_reads()

    def _pay_for_reads(self) -> None:
        """Bandwidth caps: stop reading until what was read fits the peer's and the node's
        budgets. Pausing (TCP then slows the sender) loses nothing, unlike dropping."""
        transport, owed = self._transport, self._owed
        if transport is None or transport.is_closing() or not owed:
            return
        now = self.service.clock()
        budget, shared = self._receive_budget, self.service.bandwidth
        wait = max(
            0.0 if budget is None else budget.wait_time(now, owed),
            shared.wait_time(owed, now),
        )
        if wait <= 0.0:
            if budget is not None:
                budget.take(now, owed)
            shared.admit_bytes(owed, now)
            self._owed = 0
            if self._reading_paused:
                self._reading_paused = False
                transport.resume_reading()
            return
        if not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        asyncio.get_running_loop().call_later(wait, self._pay_for_reads)

    def eof_received(self) -> bool:
        if self.session is not None:
            self.session.receive_eof()
            self._after_activity()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        session = self.session
        if session is not None and not session.closed:
            session.receive_eof()
            self._process_events()
        self.service.forget(self)
        if not self.closed.done():
            self.closed.set_result(None)

    # --- driving the session -----------------------------------------------------------

    def send(self, message: AnyMessage, encoded: bytes | None = None) -> None:
        if self.session is not None and not self.session.closed:
            self.session.send(message, encoded)
            self._schedule_flush()

    def close(self, code: GoodbyeCode, reason: str) -> None:
        if self.session is not None:
            self.session.close(code, reason)
            self._after_activity()

    def _after_activity(self) -> None:
        self._process_events()
        self._schedule_flush()
        self._arm_timer()

    def _process_events(self) -> None:
        assert self.session is not None
        for event in self.session.events():
            self.service.on_event(self, event)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport, session = self._transport, self.session
        if transport is None or session is None or transport.is_closing():
            return
        chunks = session.chunks_to_send()
        if chunks:
            self.service.traffic.wire_sent += sum(map(len, chunks))
            transport.writelines(chunks)
        if session.closed:
            transport.close()
        elif transport.get_write_buffer_size() > MAX_SEND_BUFFER:
            session.close(GoodbyeCode.MISBEHAVIOUR, "peer does not read what we send")
            self._process_events()
            transport.abort()

    def _arm_timer(self) -> None:
        """Keep one timer at or before the session's deadline.

        Deadlines mostly move later (every read pushes the inactivity deadline), so a
        timer already due earlier is kept: it fires, the session finds nothing due, and
        the timer is armed again. Re-arming on every read costs more than that.
        """
        session = self.session
        deadline = session.get_timer() if session is not None else None
        if self._timer is not None:
            if deadline is not None and self._timer_deadline <= deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - self.service.clock())
        self._timer_deadline = deadline
        self._timer = loop.call_at(loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.session is not None:
            self.session.handle_timer(self.service.clock())
            self._after_activity()


@dataclass
class P2PConfig:
    identity: SecretKey
    noise_static: bytes
    policy: AdmissionPolicy
    listen_address: str = ""  # advertised in our hello
    timeouts: SessionTimeouts = field(default_factory=SessionTimeouts)
    max_connections: int = MAX_CONNECTIONS
    bandwidth: BandwidthLimits = field(default_factory=BandwidthLimits)
    # The local IP outbound connections leave from ("": the OS picks). A multi-homed host
    # picks its interface; tests give each node its own 127.x address, which the peers'
    # bans, per-IP limits and address groups then see.
    source_address: str = ""


class P2PService:
    """All connections of one node, and the bridge between them and `Node.handle`."""

    def __init__(
        self, driver: NodeDriver, config: P2PConfig, rng: random.Random | None = None
    ) -> None:
        self.driver = driver
        self.config = config
        self.clock: Callable[[], float] = driver.clock
        self.rng = rng or random.Random()
        self.verifier = SignatureVerifier()
        self.connections: set[PeerConnection] = set()
        self.receive_limits = config.bandwidth
        self.bandwidth = GlobalBandwidth(config.bandwidth, self.clock())
        self.peers: dict[str, PeerConnection] = {}
        self._server: asyncio.Server | None = None
        self._dialers: set[asyncio.Task[None]] = set()
        self._closing = False  # close() began: no new connection either way
        self._encoded: OrderedDict[int, tuple[AnyMessage, bytes]] = OrderedDict()
        self._encoded_bytes = 0
        self.traffic = Traffic()
        driver.transport = self

    # --- lifecycle --------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: PeerConnection(self, initiator=False, label="inbound"), host, port
        )
        bound = self._server.sockets[0].getsockname()
        log.info("listening on %s:%d", bound[0], bound[1])
        return bound[0], bound[1]

    def dial_for_node(self, request: Dial) -> None:
        """Execute the node's `Dial`; a failure comes back to it as `DialFailed`."""
        if self._closing:
            return
        self._dialers.add(task := asyncio.create_task(self._dial_for_node(request)))
        task.add_done_callback(self._dialers.discard)

    async def _dial_for_node(self, request: Dial) -> None:
        host, port = str(request.address).rsplit(":", 1)
        try:
            await self.dial(host.strip("[]"), int(port), request.node_id, request)
        except (OSError, TimeoutError) as error:
            log.debug("dial %s failed: %s", request.address, error)
            self.driver.feed(DialFailed(request.address, str(error) or type(error).__name__))

    async def dial(
        self,
        host: str,
        port: int,
        expected_identity: bytes | None = None,
        request: Dial | None = None,
        source: str | None = None,
    ) -> PeerConnection:
        """Connect to a peer (from `source`, or the configured source address); the
        session then runs on its own. A failure to connect raises OSError/TimeoutError."""
        loop = asyncio.get_running_loop()
        local = source if source is not None else self.config.source_address
        _, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: self._outbound(host, port, expected_identity, request),
                host,
                port,
                local_addr=(local, 0) if local else None,
            ),
            DIAL_TIMEOUT,
        )
        return protocol

    def _outbound(
        self, host: str, port: int, expected_identity: bytes | None, request: Dial | None
    ) -> PeerConnection:
        connection = PeerConnection(
            self, initiator=True, label=f"{host}:{port}", expected_identity=expected_identity
        )
        connection.dial = request
        return connection

    async def close(self) -> None:
        self._closing = True
        for task in self._dialers:
            task.cancel()
        if self._server is not None:
            self._server.close()
        waiting = [c.closed for c in self.connections]
        for connection in list(self.connections):
            connection.close(GoodbyeCode.SHUTTING_DOWN, "node shutting down")
        if waiting:
            await asyncio.wait(waiting, timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()

    # --- connections --------------------------------------------------------------------

    def admit(self, connection: PeerConnection) -> bool:
        if self._closing:
            return False
        if len(self.connections) >= self.config.max_connections:
            log.info("refused %s: %d connections open", connection.label, len(self.connections))
            return False
        remote, now = connection.remote, self.clock()
        manager = self.driver.node.peer_manager
        if not connection.initiator and remote and not manager.accepts_inbound(remote, now):
            log.info("refused %s: banned", connection.label)
            return False
        self.connections.add(connection)
        return True

    def forget(self, connection: PeerConnection) -> None:
        self.connections.discard(connection)

    def dial_refused(self, request: Dial, reason: str) -> None:
        """A connection the node asked for that we closed before its session began."""
        if not self._closing:
            self.driver.feed(DialFailed(request.address, reason))

    def new_session(self, connection: PeerConnection) -> SecureSession:
        chain = self.driver.node.chain
        hello = Hello(
            protocol_version=PROTOCOL_VERSION,
            chain_id=chain.chain_id,
            node_id=self.config.identity.public_key,
            listen_address=self.config.listen_address,
            services=0,
            best_height=chain.height,
            best_hash=chain.tip_hash,
            user_agent=USER_AGENT,
        )
        local = LocalPeer(self.config.identity, self.config.noise_static, hello)
        return SecureSession(
            local,
            self.config.policy,
            initiator=connection.initiator,
            now=self.clock(),
            rng=self.rng,
            timeouts=self.config.timeouts,
            verifier=self.verifier,
            expected_identity=connection.expected_identity,
        )

    def on_event(self, connection: PeerConnection, event: SessionEvent) -> None:
        match event:
            case HandshakeCompleted(identity):
                log.debug("handshake with %s done: node %s", connection.label, identity.hex()[:16])
            case SessionEstablished(hello):
                peer_id = hello.node_id.hex()
                existing = self.peers.get(peer_id)
                if existing is not None:
                    if not self._supersedes(connection, existing, hello.node_id):
                        connection.close(GoodbyeCode.DUPLICATE_CONNECTION, "already connected")
                        return
                    # Its SessionClosed, handled at once, tells the node it went.
                    existing.close(GoodbyeCode.DUPLICATE_CONNECTION, "simultaneous connection")
                connection.peer_id = peer_id
                self.peers[peer_id] = connection
                log.info(
                    "session with %s (%s) %s, height %d, %s",
                    peer_id[:16],
                    connection.label,
                    "outbound" if connection.initiator else "inbound",
                    hello.best_height,
                    hello.user_agent,
                )
                dial = connection.dial
                kind = dial.kind if dial is not None else None
                if connection.initiator and kind is None:
                    kind = ConnectionKind.PERSISTENT  # dialled by hand (tests, tools)
                self.driver.feed(
                    PeerConnected(
                        peer_id,
                        outbound=connection.initiator,
                        node_id=hello.node_id,
                        # Dialled: the address the node asked for, whatever the socket says.
                        address=dial.address if dial is not None else connection.remote,
                        listen=_listen_address(hello.listen_address),
                        kind=kind,
                        best_height=hello.best_height,
                    )
                )
            case MessageArrived(message, size):
                Traffic.count(self.traffic.received, type(message), size)
                if connection.peer_id is not None:
                    self.driver.feed(MessageReceived(connection.peer_id, message, size))
            case PongReceived(rtt):
                log.debug("ping %s: %.1f ms", connection.label, rtt * 1000)
                if connection.peer_id is not None:
                    self.driver.feed(PingMeasured(connection.peer_id, rtt))
            case SessionClosed(reason, by_peer, code):
                side = "peer" if by_peer else "we"
                log.info("session %s closed (%s): %s", connection.label, side, reason)
                violation = not by_peer and code is GoodbyeCode.PROTOCOL_VIOLATION
                if violation and connection.remote is not None:
                    self.driver.feed(SessionViolation(connection.remote, reason))
                known = connection.peer_id
                if known is not None and self.peers.get(known) is connection:
                    del self.peers[known]
                    # Released: messages decoded in the same read as the close (the rest
                    # of a flood after the offence that ended it) go nowhere.
                    connection.peer_id = None
                    self.driver.feed(PeerDisconnected(known, reason))
                elif known is None and connection.dial is not None:
                    self.driver.feed(DialFailed(connection.dial.address, reason))

    def _supersedes(self, new: PeerConnection, old: PeerConnection, remote: bytes) -> bool:
        """Two nodes that dial each other at once both end up with two sessions, and each
        would keep the one established first: on opposite connections, as the side that
        answers a dial establishes its session a round trip before the side that dialled.
        Both sides instead keep the connection dialled by the lower identity key. Two
        connections the same way round keep the older."""
        if new.initiator == old.initiator:
            return False
        ours = self.config.identity.public_key
        return (ours if new.initiator else remote) < (remote if new.initiator else ours)

    # --- what the node asks of us (NodeDriver calls these) --------------------------------

    def send(self, peer: str, message: AnyMessage) -> None:
        connection = self.peers.get(peer)
        if connection is not None:
            encoded = self._encoding(message)
            Traffic.count(self.traffic.sent, type(message), len(encoded))
            connection.send(message, encoded)

    def _encoding(self, message: AnyMessage) -> bytes:
        """The message's encoding, made once however many peers it goes to."""
        memo = self._encoded
        known = memo.get(id(message))
        if known is not None and known[0] is message:
            return known[1]
        encoded = MESSAGE_CODEC.encode(message)
        memo[id(message)] = (message, encoded)  # held, so its id is not reused meanwhile
        self._encoded_bytes += len(encoded)
        while self._encoded_bytes > ENCODED_MEMO_BYTES and len(memo) > 1:
            _, (_, dropped) = memo.popitem(last=False)
            self._encoded_bytes -= len(dropped)
        return encoded

    def disconnect(self, peer: str, reason: str) -> None:
        connection = self.peers.get(peer)
        if connection is not None:
            connection.close(GoodbyeCode.MISBEHAVIOUR, reason)


def _listen_address(text: str) -> NetAddress | None:
    """The address a peer's hello says it listens on, if it is a literal IP and port."""
    try:
        return parse_address(text) if text else None
    except AddressError:
        return None

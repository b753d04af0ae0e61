"""One simulated machine: a real `Node` on a `MemoryStore`, driven by the virtual clock.

It executes the same actions the asyncio runtime executes — `Send` through the simulated
network, `ScheduleTimer` on the event heap (a newer schedule of the same timer replaces
the older one), `Dial` through the world's connection model, `Disconnect` by closing the
session — and hands notices to the metrics. Going offline drops the `Node` object but
keeps its store, so a node that returns resumes from its stored chain and peer state, as
a restarted process would, and its peer manager dials again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from meshchain.core.chain.block import Block
from meshchain.core.consensus.pow import mine_batch, seal_fields, work
from meshchain.core.crypto.keys import SignatureVerifier
from meshchain.core.events import (
    Action,
    BlockMined,
    Dial,
    Disconnect,
    Input,
    MessageReceived,
    MineBlock,
    NodeStarted,
    PeerConnected,
    PeerDisconnected,
    ScheduleTimer,
    Send,
    TimerFired,
)
from meshchain.core.node import Node, NodeConfig
from meshchain.core.peers.address import NetAddress
from meshchain.core.store import MemoryStore, WriteBatch
from meshchain.core.wire.messages import AnyMessage, Goodbye, Hello, Ping, Pong
from meshchain.sim.metrics import MESSAGE_KINDS
from meshchain.sim.network import wire_size

if TYPE_CHECKING:
    from meshchain.sim.world import World


class SharedBlockStore(MemoryStore):
    """A simulated node's store: block bytes shared across hosts, no transaction index.

    Each node encodes a block it accepts into its own bytes; a thousand copies of every
    block would grow the simulator by gigabytes. Bytes are immutable, so one copy per
    block hash serves every store. The transaction index (by id and by address) serves
    the API, which simulated nodes do not have, and at a thousand nodes it would cost
    about 300 bytes per node per transaction; the node core never reads it.
    """

    def __init__(self, pool: dict[bytes, bytes]) -> None:
        super().__init__()
        self._pool = pool

    def write(self, batch: WriteBatch) -> None:
        pool = self._pool
        batch.new_blocks = [
            (entry, pool.setdefault(entry.hash, raw)) for entry, raw in batch.new_blocks
        ]
        batch.txs_indexed = []
        batch.txs_unindexed = []
        super().write(batch)


class CachingVerifier(SignatureVerifier):
    """One verifier for every simulated node: a signature checked once is known valid.

    A thousand nodes verifying the same transaction would spend the run in libsecp256k1;
    the answer is the same every time, so the simulator computes it once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._results: dict[tuple[bytes, bytes, bytes], bool] = {}

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        key = (public_key, message, signature)
        result = self._results.get(key)
        if result is None:
            result = super().verify(public_key, message, signature)
            self._results[key] = result
        return result


# Nonces hashed per call while grinding a simulated block's proof.
MINING_BATCH = 1_024

SendFilter = Callable[["SimHost", int, AnyMessage], bool]
# The secure session consumes these itself; only an adversary's `send_direct` sends them.
SESSION_MESSAGES = frozenset({Hello, Goodbye, Ping, Pong})


class SimHost:
    def __init__(
        self,
        index: int,
        world: World,
        config: NodeConfig,
        verifier: SignatureVerifier,
        address: NetAddress,
    ) -> None:
        self.index = index
        self.address = address  # where it listens
        self._names = world.peer_names  # peer ids are indexes as strings, made once
        self.world = world
        self._sim = world.sim
        self._bytes_received = world.metrics.bytes_received[index]
        self.config = config
        self.verifier = verifier
        self.store = SharedBlockStore(world.block_pool)
        self.node: Node | None = None
        self.connected: set[int] = set()
        self.starts = 0
        self.honest = True
        # Adversaries: return False to drop an outgoing message.
        self.send_filter: SendFilter | None = None
        self.on_message: Callable[[SimHost, int, AnyMessage], None] | None = None
        self._timer_versions: dict[str, int] = {}
        self._mining = 0  # counts templates: a search for an older one is stale
        self._mining_rng = world.sim.rng(f"mining/{index}")

    @property
    def online(self) -> bool:
        return self.node is not None

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the process; its peer manager dials what it knows."""
        if self.node is not None:
            return
        rng = self.world.sim.rng(f"node/{self.index}/{self.starts}")
        self.starts += 1
        self.node = Node(self.config, self.store, rng, self.verifier)
        self.feed(NodeStarted())

    def stop(self) -> None:
        """Crash or leave: the process is gone, the store stays."""
        if self.node is None:
            return
        self.node = None
        # Timers of the dead process must not fire in the next one.
        versions = self._timer_versions
        for timer in versions:
            versions[timer] += 1
        self._mining += 1
        for peer in sorted(self.connected):
            self.world.disconnect(self.index, peer, "peer went offline")

    # --- inputs ---------------------------------------------------------------------

    def feed(self, event: Input) -> None:
        node = self.node
        if node is None:
            return
        self.execute(node.handle(event, self.world.sim.now))

    def peer_connected(self, peer: int, event: PeerConnected) -> None:
        self.connected.add(peer)
        self.feed(event)

    def peer_disconnected(self, peer: int, reason: str) -> None:
        self.connected.discard(peer)
        self.feed(PeerDisconnected(str(peer), reason))

    def receive(self, src: int, message: AnyMessage, size: int) -> None:
        # Once per delivery: `feed`, `execute` and `Metrics.received` are inlined.
        node = self.node
        if node is None or src not in self.connected:
            self.world.network.stats.dropped_offline += 1
            return
        self._bytes_received[MESSAGE_KINDS.get(message.__class__, "session")] += size
        if self.on_message is not None:
            self.on_message(self, src, message)
        if message.__class__ in SESSION_MESSAGES:
            self._session_message(src, message)
            return
        event = MessageReceived(self._names[src], message, size)  # type: ignore[arg-type]
        actions = node.handle(event, self._sim.now)
        if actions:
            self.execute(actions)

    def _session_message(self, src: int, message: AnyMessage) -> None:
        """What `SecureSession` does with a session message on an open session."""
        if isinstance(message, Ping):
            self.execute([Send(str(src), Pong(message.nonce))])  # type: ignore[arg-type]
        elif isinstance(message, Goodbye):
            self.world.disconnect(self.index, src, f"peer said goodbye: {message.reason}")
        elif isinstance(message, Hello):
            self.world.disconnect(self.index, src, "a second Hello")

    def _fire(self, timer: str, version: int) -> None:
        if self._timer_versions.get(timer) == version:
            self.feed(TimerFired(timer))

    # --- actions --------------------------------------------------------------------

    def execute(self, actions: list[Action]) -> None:
        if not actions:
            return  # most deliveries: a transaction the node already has
        world = self.world
        count = len(actions)
        index = 0
        while index < count:
            action = actions[index]
            index += 1
            if isinstance(action, Send):
                # A relay is a run of Sends of one message: it goes out as one batch.
                message = action.message
                peers = [action.peer]
                while index < count:
                    following = actions[index]
                    if not isinstance(following, Send) or following.message is not message:
                        break
                    peers.append(following.peer)
                    index += 1
                self._send(message, peers)
            elif isinstance(action, ScheduleTimer):
                version = self._timer_versions.get(action.timer, 0) + 1
                self._timer_versions[action.timer] = version
                world.sim.at(action.at, self._fire, action.timer, version)
            elif isinstance(action, Disconnect):
                world.disconnect(self.index, int(action.peer), action.reason)
            elif isinstance(action, Dial):
                world.dial(self.index, action)
            elif isinstance(action, MineBlock):
                self._mine(action.block)
            else:
                world.metrics.notice(self.index, action, world.sim.now)

    # --- proof of work ------------------------------------------------------------------

    def _mine(self, template: Block) -> None:
        """Model this miner's search: the proof turns up after an exponential wait whose
        mean is the template's expected work over the miner's hash rate (virtual time);
        a newer template replaces the search, as the runtime's miner does."""
        self._mining += 1
        target, _ = seal_fields(template.header)
        rate = self.world.config.hashrate / work(target)
        delay = self._mining_rng.expovariate(rate)
        self._sim.at(self._sim.now + delay, self._mined, template, self._mining)

    def _mined(self, template: Block, version: int) -> None:
        if version != self._mining or self.node is None:
            return
        found, start = None, 0
        while found is None:  # the real proof, found by real hashing (difficulty is low)
            found = mine_batch(template.header, start, MINING_BATCH)
            start += MINING_BATCH
        self.feed(BlockMined(Block(found, template.transactions)))

    def _send(self, message: AnyMessage, peers: list[str]) -> None:
        """Each `Send` of `message` to `peers` in turn: to open sessions the filter passes."""
        connected = self.connected
        targets = [peer for peer in map(int, peers) if peer in connected]
        send_filter = self.send_filter
        if send_filter is not None:
            targets = [peer for peer in targets if send_filter(self, peer, message)]
        if not targets:
            return
        size = wire_size(message)
        world = self.world
        world.metrics.sent(self.index, message, size, len(targets))
        world.network.send_many(self.index, targets, message, size)

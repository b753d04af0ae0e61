"""Sync tests' helpers: chains built once, serving nodes, and a pump that carries the
sync messages between a syncing node and its peers (relay traffic is left out)."""

from __future__ import annotations

import functools
import random
from collections import deque
from collections.abc import Callable

import msgspec
from relaykit import KIT

from meshchain.core.chain.block import Block, BlockHeader, block_hash, header_hash
from meshchain.core.chain.chainstate import ChainState
from meshchain.core.chain.tx import verify_transaction
from meshchain.core.consensus.engine import ConsensusEngine
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.events import (
    Action,
    MessageReceived,
    NodeStarted,
    PeerConnected,
    ScheduleTimer,
    Send,
    TimerFired,
)
from meshchain.core.node import Node, NodeConfig
from meshchain.core.peers.address import NetAddress
from meshchain.core.peers.config import PeerConfig
from meshchain.core.relay.config import RelayConfig
from meshchain.core.store import MemoryStore
from meshchain.core.sync import SYNC_TIMER
from meshchain.core.wire.messages import (
    AnyMessage,
    BlocksNotFound,
    GetBlocks,
    GetHeaders,
    Headers,
    SyncBlock,
)
from meshchain.errors import RejectCode, ValidationError

CLIENT = "client"
SYNC_MESSAGES = (GetHeaders, Headers, GetBlocks, SyncBlock, BlocksNotFound)
NO_STEM = RelayConfig(dandelion=False)


@functools.cache
def kit_chain(length: int, txs_every: int = 0) -> tuple[Block, ...]:
    """A PoA chain of `length` blocks on KIT's genesis; every `txs_every`-th block holds
    a transfer (0: none). Built once per shape."""
    chain = KIT.chain()
    verifier = SignatureVerifier()
    blocks: list[Block] = []
    for height in range(1, length + 1):
        txs = []
        if txs_every and height % txs_every == 0:
            nonce = chain.ledger.account_nonce(KIT.address(0))
            tx = KIT.transfer(chain, 0, 1, 5, 500, nonce)
            txs = [verify_transaction(tx, verifier)]
        block = KIT.next_block(chain, txs)
        chain.add_block(block, KIT.now_after(block))
        blocks.append(block)
    return tuple(blocks)


def fire(client: Node, at: float) -> list[Action]:
    """The sync timer going off at `at`."""
    return client.handle(TimerFired(SYNC_TIMER), at)


def timer_due(actions: list[Action]) -> float | None:
    due = [a.at for a in actions if isinstance(a, ScheduleTimer) and a.timer == SYNC_TIMER]
    return due[-1] if due else None


def now_after(blocks: tuple[Block, ...] | list[Block]) -> float:
    return KIT.now_after(blocks[-1]) if blocks else KIT.genesis.timestamp_ms / 1000 + 1


def node(
    store: MemoryStore | None = None, engine: ConsensusEngine | None = None, seed: int = 1
) -> Node:
    config = NodeConfig(KIT.genesis, peers=PeerConfig(discovery=False), relay=NO_STEM)
    made = Node(config, store or MemoryStore(), random.Random(seed), engine=engine)
    made.handle(NodeStarted(), KIT.genesis.timestamp_ms / 1000)
    return made


def server(blocks: tuple[Block, ...] | list[Block], engine: ConsensusEngine | None = None) -> Node:
    """A node holding `blocks` (stored straight into its chain)."""
    made = node(engine=engine)
    for block in blocks:
        made.chain.add_block(block, now_after(blocks))
    return made


def connect(client: Node, peer: str, best_height: int, now: float) -> list[Action]:
    number = sum(peer.encode()) % 250 + 1
    address = NetAddress(bytes([10, number, 0, 1]), 26656)
    event = PeerConnected(peer, True, bytes([number]) * 32, address, address, None, best_height)
    return client.handle(event, now)


def receive(client: Node, peer: str, message: AnyMessage, now: float) -> list[Action]:
    return client.handle(MessageReceived(peer, message, 100), now)  # type: ignore[arg-type]


def sync_sends(actions: list[Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send) and isinstance(a.message, SYNC_MESSAGES)]


Drop = Callable[[str, AnyMessage], bool]


def pump(
    client: Node,
    servers: dict[str, Node],
    actions: list[Action],
    now: float,
    drop: Drop | None = None,
    rewrite: Callable[[str, list[Send]], list[Send]] | None = None,
) -> list[Action]:
    """Carry sync messages between `client` and `servers` until quiet. `drop` loses a
    client's request on its way; `rewrite` changes a server's answers (reorders them,
    tampers with them). Returns every action the client produced, the first included."""
    produced = list(actions)
    queue: deque[Action] = deque(actions)
    while queue:
        action = queue.popleft()
        if not isinstance(action, Send) or action.peer not in servers:
            continue
        if not isinstance(action.message, SYNC_MESSAGES):
            continue
        if drop is not None and drop(action.peer, action.message):
            continue
        answers = servers[action.peer].handle(
            MessageReceived(CLIENT, action.message, 100),
            now,
        )
        sends = sync_sends(answers)
        if rewrite is not None:
            sends = rewrite(action.peer, sends)
        for answer in sends:
            if answer.peer == CLIENT:
                reply = receive(client, action.peer, answer.message, now)
                produced += reply
                queue.extend(reply)
    return produced


def hashes(blocks: tuple[Block, ...] | list[Block]) -> list[bytes]:
    return [block_hash(block) for block in blocks]


def requested(actions: list[Action]) -> list[tuple[str, bytes]]:
    """(peer, block hash) for each block asked for with GetBlocks, in order."""
    return [
        (a.peer, wanted)
        for a in actions
        if isinstance(a, Send) and isinstance(a.message, GetBlocks)
        for wanted in a.message.hashes
    ]


class WeightEngine:
    """A test engine: a header's consensus field is its weight (8 bytes), then, when
    `certified_by_child`, 8 bytes of its parent's hash: a stand-in for a BFT header that
    carries its parent's commit certificate, so a header proves its parent, not itself."""

    name = "weight"
    max_future_drift_ms = 15_000
    finality_depth: int | None = None

    def __init__(self, weight: int = 1, certified_by_child: bool = False) -> None:
        self.weight = weight
        self.certified_by_child = certified_by_child

    def check_header(self, header: BlockHeader, parent: BlockHeader) -> None:
        wanted = 16 if self.certified_by_child else 8
        if len(header.consensus) != wanted:
            raise ValidationError(RejectCode.BAD_CONSENSUS, "weight seal of the wrong size")
        if self.certified_by_child and header.consensus[8:] != header_hash(parent)[:8]:
            raise ValidationError(RejectCode.BAD_CONSENSUS, "does not certify its parent")

    def block_weight(self, header: BlockHeader) -> int:
        return 1 if header.height == 0 else int.from_bytes(header.consensus[:8], "big")

    def can_propose(self, height: int, public_key: bytes) -> bool:
        return True

    def template_consensus(self, parent: BlockHeader) -> bytes:
        seal = self.weight.to_bytes(8, "big")
        return seal + header_hash(parent)[:8] if self.certified_by_child else seal

    def seal(self, header: BlockHeader, key: SecretKey) -> BlockHeader:
        return header


def weighted_headers(start: BlockHeader, count: int, weight: int, gap_ms: int) -> list[BlockHeader]:
    """Headers (no blocks) for `WeightEngine` on top of `start`: each of `weight`,
    `gap_ms` after its parent."""
    headers = []
    parent = start
    for _ in range(count):
        parent = msgspec.structs.replace(
            parent,
            height=parent.height + 1,
            parent=header_hash(parent),
            timestamp_ms=parent.timestamp_ms + gap_ms,
            consensus=weight.to_bytes(8, "big"),
        )
        headers.append(parent)
    return headers


def engine_chain(engine: WeightEngine, length: int) -> tuple[ChainState, list[Block]]:
    """`length` empty blocks on KIT's genesis under `engine`, one second apart."""
    chain = ChainState(KIT.genesis, engine, MemoryStore())
    blocks = []
    for _ in range(length):
        block, _ = chain.build_block([], chain.tip_header.timestamp_ms + 1_000, bytes(20))
        chain.add_block(block, block.header.timestamp_ms / 1000 + 1)
        blocks.append(block)
    return chain, blocks

"""The node: every core component behind one `handle(input, now) -> list[Action]`.

The asyncio runtime and the simulator both drive this object and execute exactly the
actions it returns. Relay is announce-then-fetch by default (`core/relay/`: trickled
inventories, compact blocks, Dandelion++ for transactions); `flood` mode pushes each new
valid transaction or block to every peer but its source, the baseline to compare with.
Message handlers for relay live in `relay/gossip.py`, and for catching up with peers in
`sync/` (headers-first download); this module keeps the chain side.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshchain.core.chain.block import Block, block_hash
from meshchain.core.chain.chainstate import AddBlockResult, ChainState
from meshchain.core.chain.genesis import Genesis
from meshchain.core.chain.mempool import Mempool
from meshchain.core.chain.tx import (
    TX_CODEC,
    Transaction,
    VerifiedTx,
    txid_of,
    verify_transaction,
)
from meshchain.core.chain.validation import check_transaction
from meshchain.core.consensus import BftEngine, ConsensusEngine, ProofOfWork, engine_for
from meshchain.core.consensus.bftnode import BftConsensus
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.events import (
    Action,
    BlockAccepted,
    BlockMined,
    BlockRejected,
    ChainReorganized,
    ConnectionKind,
    DialFailed,
    Disconnect,
    Input,
    MessageReceived,
    MineBlock,
    NodeStarted,
    NodeStopping,
    PeerConnected,
    PeerDisconnected,
    PeerId,
    PingMeasured,
    ScheduleTimer,
    Send,
    SessionViolation,
    TimerFired,
    TransactionAccepted,
    TransactionRejected,
    TransactionSubmitted,
)
from meshchain.core.peers.bans import Offence
from meshchain.core.peers.config import PeerConfig
from meshchain.core.peers.manager import PeerManager
from meshchain.core.relay.config import RelayConfig, RelayMode
from meshchain.core.relay.gossip import Gossip
from meshchain.core.store import ChainStore
from meshchain.core.sync import Sync
from meshchain.core.wire.messages import (
    Addr,
    BlockMessage,
    CommitMessage,
    ConsensusStatus,
    EvidenceMessage,
    GetAddr,
    GetBlock,
    Message,
    ProposalMessage,
    TransactionMessage,
    VoteMessage,
)
from meshchain.errors import DecodeError, RejectCode, ValidationError

PRODUCE_TIMER = "produce"
EXPIRE_TIMER = "mempool-expire"
MEMPOOL_EXPIRE_INTERVAL = 60.0  # seconds between mempool expiry sweeps
# Block templates stay well under MAX_BLOCK_SIZE so a block always fits one message.
BLOCK_TEMPLATE_MAX_BYTES = 1_000_000
BLOCK_TEMPLATE_MAX_TXS = 5_000
# Ours: a miner rebuilds its template this often (new transactions, a fresh timestamp),
# besides at once whenever its tip changes.
MINING_TEMPLATE_REFRESH = 10.0
# Rejections that a later block or transaction may cure: not remembered as rejected.
RETRYABLE_REJECTIONS = frozenset({RejectCode.NONCE_GAP, RejectCode.DUPLICATE})
# Rejections that say the peer sent something no honest node would send.
PEER_FAULTS = frozenset(
    {
        RejectCode.MALFORMED,
        RejectCode.BAD_SIGNATURE,
        RejectCode.BAD_MERKLE_ROOT,
        RejectCode.BAD_STATE_ROOT,
        RejectCode.BAD_CONSENSUS,
        RejectCode.WRONG_CHAIN,
        RejectCode.BAD_VERSION,
        RejectCode.TOO_LARGE,
        RejectCode.BAD_HEIGHT,
        RejectCode.INVALID_ANCESTOR,
    }
)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    genesis: Genesis
    validator_key: SecretKey | None = None  # set on nodes that make blocks
    beneficiary: bytes | None = None  # who is paid for our blocks; default: the validator
    peers: PeerConfig = field(default_factory=PeerConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)


def _ignore(peer: PeerId, message: Any, now: float) -> list[Action]:
    """Consensus messages of an engine this chain does not run: nothing to do."""
    return []


class Node:
    def __init__(
        self,
        config: NodeConfig,
        store: ChainStore,
        rng: random.Random,
        verifier: SignatureVerifier | None = None,
        engine: ConsensusEngine | None = None,  # tests bring their own; else genesis's
    ) -> None:
        self.config = config
        self.rng = rng
        self.verifier = verifier or SignatureVerifier()
        self.engine = engine or engine_for(config.genesis, self.verifier)
        self.chain = ChainState(config.genesis, self.engine, store, self.verifier)
        self.mempool = Mempool(self.chain.ledger)
        self.chain.verified_lookup = self.mempool.get
        self.peer_manager = PeerManager(config.peers, store, rng)
        self.flood = config.relay.mode is RelayMode.FLOOD
        self.gossip = Gossip(self)
        self.sync = Sync(self)
        # Who gets what we relay: every connection but feelers gets blocks; block-relay-
        # only ones get no transactions. Lists, not a scan of the records: relay is hot.
        self.peers: dict[PeerId, ConnectionKind] = {}
        self._block_relay_peers: list[PeerId] = []
        self._tx_relay_peers: list[PeerId] = []
        key = config.validator_key
        self.beneficiary = config.beneficiary or (
            address_from_public_key(key.public_key) if key is not None else bytes(20)
        )
        # Proof of work: a node with a key mines (the key only names who is paid).
        self.mining = isinstance(self.engine, ProofOfWork) and key is not None
        # BFT: every node follows the votes; blocks come only with their commit.
        self.bft = BftConsensus(self) if isinstance(self.engine, BftEngine) else None
        self._dispatch_tables()

    # --- the one entry point ----------------------------------------------------------

    def handle(self, event: Input, now: float) -> list[Action]:
        # Dispatch on exact types through two tables: this runs once per message, and a
        # `match` over nested class patterns costs ten times as much.
        if type(event) is MessageReceived:
            handler = self._message_handlers.get(type(event.message))
            if handler is None:
                raise TypeError(f"Node.handle got an unknown message {event.message!r}")
            refused = self.peer_manager.over_limit(event.peer, event.message, now)
            if refused is not None:
                return refused  # over the peer's rate limit: dropped, and counted
            return handler(event.peer, event.message, now)
        input_handler = self._input_handlers.get(type(event))
        if input_handler is None:
            raise TypeError(f"Node.handle got an unknown input {event!r}")
        return input_handler(event, now)

    def handle_message(self, peer: PeerId, message: Message, now: float) -> list[Action]:
        """A message received earlier and held back (a consensus message for a height we
        had not reached), handled now; its rate was charged when it arrived."""
        if peer not in self.peers:
            return []
        return self._message_handlers[type(message)](peer, message, now)

    def _dispatch_tables(self) -> None:
        self._input_handlers: dict[type, Callable[[Any, float], list[Action]]] = {
            NodeStarted: lambda event, now: self._started(now),
            NodeStopping: lambda event, now: self._stopping(),
            PeerConnected: self._connected,
            PeerDisconnected: lambda event, now: self._disconnected(event.peer, now),
            DialFailed: lambda event, now: self.peer_manager.dial_failed(event.address, now),
            PingMeasured: lambda event, now: self._ping_measured(event.peer, event.rtt),
            SessionViolation: lambda event, now: self.peer_manager.session_violation(
                event.address, event.reason, now
            ),
            TransactionSubmitted: lambda event, now: self._submitted(event.raw, now),
            TimerFired: lambda event, now: self._timer(event.timer, now),
            BlockMined: lambda event, now: self.accept_block(event.block, now, None),
        }
        self._message_handlers: dict[type, Callable[[PeerId, Any, float], list[Action]]] = {
            TransactionMessage: self._transaction_message,
            BlockMessage: lambda peer, m, now: self.accept_block(m.block, now, peer),
            GetBlock: lambda peer, m, now: self._serve_block(peer, m.block_hash),
            GetAddr: lambda peer, m, now: self.peer_manager.exchange.on_get_addr(peer, now),
            Addr: lambda peer, m, now: self.peer_manager.exchange.on_addr(peer, m, now),
            **self.gossip.message_handlers(),
            **self.sync.message_handlers(),
        }
        bft = self.bft
        consensus: dict[type, Callable[[PeerId, Any, float], list[Action]]] = {
            ProposalMessage: bft.on_proposal if bft else _ignore,
            VoteMessage: bft.on_vote if bft else _ignore,
            CommitMessage: bft.on_commit if bft else _ignore,
            EvidenceMessage: bft.on_evidence if bft else _ignore,
            ConsensusStatus: bft.on_status if bft else _ignore,
        }
        self._message_handlers.update(consensus)

    def _connected(self, event: PeerConnected, now: float) -> list[Action]:
        peer, kind = event.peer, event.connection_kind
        actions = self.peer_manager.connected(
            peer, kind, event.node_id, event.address, event.listen, now
        )
        if any(isinstance(a, Disconnect) and a.peer == peer for a in actions):
            return actions  # refused, or a feeler: nothing more to say on it
        self.peers[peer] = kind
        self._block_relay_peers.append(peer)
        if kind is not ConnectionKind.BLOCK_RELAY:
            self._tx_relay_peers.append(peer)
        actions += self.gossip.peer_connected(peer, kind, now)
        return actions + self._greet(peer) + self.sync.peer_connected(peer, event.best_height, now)

    def _disconnected(self, peer: PeerId, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.peers.pop(peer, None) is not None:
            self._block_relay_peers.remove(peer)
            if peer in self._tx_relay_peers:
                self._tx_relay_peers.remove(peer)
            actions = self.gossip.peer_disconnected(peer, now)
            if self.bft is not None:
                self.bft.peer_gone(peer)
            actions += self.sync.peer_disconnected(peer, now)
        return actions + self.peer_manager.disconnected(peer, now)

    def _ping_measured(self, peer: PeerId, rtt: float) -> list[Action]:
        self.peer_manager.ping_measured(peer, rtt)
        return []

    def _stopping(self) -> list[Action]:
        self.peer_manager.stop()
        return []

    def next_nonce(self, sender: bytes) -> int:
        """The nonce for the sender's next transaction: after the ones pending here,
        public (mempool) or still in the Dandelion++ stem (stempool)."""
        nonce = self.mempool.next_nonce(sender)
        stem = {vtx.tx.body.nonce for vtx in self.gossip.stempool.pending_for(sender)}
        while nonce in stem:
            nonce += 1
        return nonce

    # --- handlers ---------------------------------------------------------------------

    def _started(self, now: float) -> list[Action]:
        actions: list[Action] = [ScheduleTimer(EXPIRE_TIMER, now + MEMPOOL_EXPIRE_INTERVAL)]
        if self.mining:
            actions += self._mine(now)
        elif self.bft is not None:
            actions += self.bft.start(now)
        elif self.config.validator_key is not None:
            actions.append(ScheduleTimer(PRODUCE_TIMER, self._next_slot(now)))
        return actions + self.gossip.start(now) + self.peer_manager.start(now)

    def _greet(self, peer: PeerId) -> list[Action]:
        """Show a new peer our tip: if it lacks it, it asks for the missing parents."""
        if self.bft is not None:
            return self.bft.greet(peer)
        if self.chain.height == 0:
            return []
        if not self.flood:
            return self.gossip.greet(peer)
        tip = self.chain.block(self.chain.tip_hash)
        return [] if tip is None else [Send(peer, BlockMessage(tip))]

    def _serve_block(self, peer: PeerId, wanted: bytes) -> list[Action]:
        block = self.chain.block(wanted) if self.chain.entry(wanted) is not None else None
        return [] if block is None else [Send(peer, BlockMessage(block))]

    def sync_caught_up(self, now: float) -> list[Action]:
        """Sync connected the best chain it knew: announce the tip it left us on (blocks
        connected while syncing are not relayed one by one) and mine on it."""
        tip = self.chain.block(self.chain.tip_hash)
        actions: list[Action] = []
        if tip is not None and tip.header.height > 0 and self.bft is None:
            if self.flood:
                actions += self._flood(BlockMessage(tip), None)
            else:
                actions += self.gossip.blocks_connected([(tip, [])], None)
        if self.mining:
            actions += self._mine(now)
        return actions

    def _flood(
        self, message: TransactionMessage | BlockMessage, source: PeerId | None
    ) -> list[Action]:
        """The baseline relay: the whole item to every relay peer but its source."""
        is_tx = type(message) is TransactionMessage
        peers = self._tx_relay_peers if is_tx else self._block_relay_peers
        return [Send(peer, message) for peer in peers if peer != source]

    def _submitted(self, raw: bytes, now: float) -> list[Action]:
        try:
            tx = TX_CODEC.decode(raw)
        except DecodeError as exc:
            return [TransactionRejected(None, RejectCode.MALFORMED, exc.reason, None)]
        if not self.flood and self.config.relay.dandelion:
            return self.gossip.stem(tx, raw, None, now)
        return self.accept_transaction(tx, raw, now, None)

    def _transaction_message(
        self, peer: PeerId, message: TransactionMessage, now: float
    ) -> list[Action]:
        # The common case first, without another call: a transaction we already have.
        if self.mempool.has(txid_of(message.transaction)):
            return []
        return self.accept_transaction(message.transaction, None, now, peer)

    def verify(self, tx: Transaction, raw: bytes | None) -> VerifiedTx:
        """Stateless checks and the signature; ValidationError says what is wrong."""
        check_transaction(tx, self.chain.chain_id)
        return verify_transaction(tx, self.verifier, raw)

    def rejected(
        self, tx: Transaction, error: ValidationError, now: float, peer: PeerId | None
    ) -> list[Action]:
        """The notice for a refused transaction, and the sender's penalty if it is at fault."""
        txid = txid_of(tx)
        actions: list[Action] = [TransactionRejected(txid, error.code, error.detail, peer)]
        if not self.flood and error.code not in RETRYABLE_REJECTIONS:
            self.gossip.tx_relay.rejected(txid)
        if peer is not None and error.code in PEER_FAULTS:
            actions += self.peer_manager.punish(
                peer, Offence.INVALID_TRANSACTION, now, f"sent an invalid transaction: {error}"
            )
        return actions

    def admit(
        self, pool: Mempool, tx: Transaction, raw: bytes | None, now: float, peer: PeerId | None
    ) -> tuple[VerifiedTx | None, list[Action]]:
        """Verify a transaction into `pool` (the mempool or the stempool): the verified
        transaction, or None and what its rejection costs."""
        try:
            vtx = self.verify(tx, raw)
            pool.add(vtx, now)
        except ValidationError as error:
            return None, self.rejected(tx, error, now, peer)
        if peer is not None:
            self.peer_manager.delivered_transaction(peer, now)
        return vtx, []

    def accept_transaction(
        self, tx: Transaction, raw: bytes | None, now: float, peer: PeerId | None
    ) -> list[Action]:
        if txid_of(tx) in self.mempool:
            return []  # seen already: flood relay delivers most transactions several times
        vtx, refused = self.admit(self.mempool, tx, raw, now, peer)
        if vtx is None:
            return refused
        if self.flood:
            return [TransactionAccepted(vtx.txid), *self._flood(TransactionMessage(tx), peer)]
        return [TransactionAccepted(vtx.txid), *self.gossip.fluffed(vtx.txid, peer, now)]

    def block_candidates(self) -> list[VerifiedTx]:
        """Mempool transactions for a new block, best fee rate first, within its bounds."""
        return self.mempool.select(BLOCK_TEMPLATE_MAX_BYTES, BLOCK_TEMPLATE_MAX_TXS)

    def punish_invalid(
        self, peer: PeerId | None, error: ValidationError, now: float, what: str
    ) -> list[Action]:
        """What sending an invalid block or header costs a peer: a forged seal is a
        ban, another fault of the sender's a discouragement; others (a clock ahead of
        ours) nothing."""
        if peer is None or error.code not in PEER_FAULTS:
            return []
        offence = (
            Offence.INVALID_CONSENSUS_PROOF
            if error.code is RejectCode.BAD_CONSENSUS
            else Offence.INVALID_BLOCK
        )
        return self.peer_manager.punish(peer, offence, now, f"sent an invalid {what}: {error}")

    def accept_block(
        self,
        block: Block,
        now: float,
        peer: PeerId | None,
        raw: bytes | None = None,
        relay: bool = True,
        meta: dict[str, bytes] | None = None,
        certified: bool = False,
        produced: bool | None = None,
    ) -> list[Action]:
        """Validate, store and maybe connect a block, then relay it and update the mempool.
        Sync passes `relay=False`: blocks it catches up with are not announced one by one
        (`sync_caught_up` announces the tip). On a BFT chain only a block with a commit
        certificate is taken (`certified`: checked by the consensus component, or by sync
        through its child's header); anything else from a peer is not final, left alone."""
        if self.bft is not None and not certified:
            return []
        old_tip = self.chain.tip_hash
        update = self.chain.add_block(block, now, raw=raw, meta=meta)
        self.gossip.block_relay.arrived(update.block_hash)  # held, connected or refused
        actions: list[Action] = []
        if update.error is not None:
            error = update.error
            actions.append(BlockRejected(update.block_hash, error.code, error.detail, peer))
            actions += self.punish_invalid(peer, error, now, "block")
        if update.result in (AddBlockResult.DUPLICATE, AddBlockResult.INVALID):
            return actions
        for disconnected, vtxs in update.disconnected:
            self.mempool.block_disconnected(vtxs, now)
            self.gossip.block_disconnected(disconnected)
        for connected, vtxs in update.connected:
            self.mempool.block_connected(vtxs)
            self.gossip.block_connected(connected, vtxs)
            if self.bft is not None:
                self.bft.block_connected(connected)
            actions.append(
                BlockAccepted(
                    block_hash(connected),
                    connected.header.height,
                    len(vtxs),
                    produced=peer is None if produced is None else produced,
                )
            )
        if update.disconnected:
            actions.append(
                ChainReorganized(
                    old_tip,
                    self.chain.tip_hash,
                    len(update.disconnected),
                    len(update.connected),
                )
            )
        if update.result is AddBlockResult.ORPHAN:
            if peer is not None:  # it has a chain we lack: sync fetches it headers first
                actions.extend(self.sync.orphan(peer, block, now))
            return actions
        if peer is not None:
            self.peer_manager.delivered_block(peer, now)
        if not relay:
            if self.bft is not None and update.connected:
                actions += self.bft.chain_moved(now)  # sync took it past consensus
            return actions
        if self.mining and update.connected:
            actions.extend(self._mine(now))  # the tip moved: the old work is stale
        if self.bft is not None:
            return actions  # peers learn blocks by following the votes, or by commits
        if self.flood:
            actions.extend(self._flood(BlockMessage(block), peer))
        else:
            actions.extend(self.gossip.blocks_connected(update.connected, peer))
        return actions

    def _timer(self, timer: str, now: float) -> list[Action]:
        peer_actions = self.peer_manager.timer(timer, now)
        if peer_actions is not None:
            return peer_actions
        if self.bft is not None:
            bft_actions = self.bft.timer(timer, now)
            if bft_actions is not None:
                return bft_actions
        relay_actions = self.gossip.timer(timer, now)
        if relay_actions is not None:
            return relay_actions
        sync_actions = self.sync.timer(timer, now)
        if sync_actions is not None:
            return sync_actions
        if timer == EXPIRE_TIMER:
            self.mempool.expire(now)
            self.gossip.stempool.expire(now)
            return [ScheduleTimer(EXPIRE_TIMER, now + MEMPOOL_EXPIRE_INTERVAL)]
        if timer == PRODUCE_TIMER and self.sync.syncing:  # no block on a tip known stale
            interval = self.config.genesis.consensus.block_interval_ms / 1000
            wait = MINING_TEMPLATE_REFRESH if self.mining else interval
            return [ScheduleTimer(PRODUCE_TIMER, now + wait)]
        if timer == PRODUCE_TIMER and self.mining:
            return self._mine(now)
        if timer == PRODUCE_TIMER:
            actions = self._produce(now)
            actions.append(ScheduleTimer(PRODUCE_TIMER, self._next_slot(now)))
            return actions
        return []

    # --- block production -------------------------------------------------------------

    def _next_slot(self, now: float) -> float:
        """When the next block may be made: one block interval after the tip."""
        interval = self.config.genesis.consensus.block_interval_ms / 1000
        due = self.chain.tip_header.timestamp_ms / 1000 + interval
        return due if due > now else now + interval

    def _mine(self, now: float) -> list[Action]:
        """A fresh proof-of-work template on the tip for the driver's miner."""
        block, _ = self.chain.build_block(
            self.block_candidates(), int(now * 1000), self.beneficiary
        )
        return [MineBlock(block), ScheduleTimer(PRODUCE_TIMER, now + MINING_TEMPLATE_REFRESH)]

    def _produce(self, now: float) -> list[Action]:
        key = self.config.validator_key
        assert key is not None
        height = self.chain.height + 1
        interval_ms = self.config.genesis.consensus.block_interval_ms
        now_ms = int(now * 1000)
        if not self.engine.can_propose(height, key.public_key):
            return []
        if now_ms < self.chain.tip_header.timestamp_ms + interval_ms:
            return []
        block, _ = self.chain.build_block(self.block_candidates(), now_ms, self.beneficiary)
        sealed = Block(self.engine.seal(block.header, key), block.transactions)
        return self.accept_block(sealed, now, None)

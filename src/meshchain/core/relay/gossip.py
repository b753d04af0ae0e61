"""The node's relay side: routes relay messages to the transaction relay, the block
relay and Dandelion++, and keeps the stempool.

The stempool holds stem-phase transactions: valid, but not public yet. It is a mempool
of its own, so nothing that reads the mempool (announcements, GetData, block templates,
API queries) can see them; only the stem successor they were pushed to has them. A stem
transaction leaves it when it is seen in the fluff phase (it arrives as an ordinary
transaction), when its embargo runs out (we fluff it ourselves), or when a block
confirms it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from meshchain.core.chain.block import Block, block_hash, header_hash
from meshchain.core.chain.mempool import Mempool
from meshchain.core.chain.tx import Transaction, VerifiedTx, txid_of
from meshchain.core.events import (
    Action,
    ConnectionKind,
    PeerId,
    Send,
    TransactionAccepted,
    TransactionStemmed,
)
from meshchain.core.relay.blockrelay import BLOCK_REQUEST_TIMER, BlockRelay
from meshchain.core.relay.dandelion import Dandelion
from meshchain.core.relay.txrelay import TxRelay
from meshchain.core.wire.messages import (
    BlockTxn,
    CompactBlock,
    GetBlockTxn,
    GetData,
    Inventory,
    InvKind,
    NotFound,
    SendCompact,
    StemTransaction,
    Transactions,
)
from meshchain.errors import ValidationError

if TYPE_CHECKING:
    from meshchain.core.node import Node

# Ours: stem transactions are few (each node holds only those routed through it in the
# last embargo period), so a small pool; full, it evicts by fee like the mempool.
MAX_STEMPOOL_BYTES = 4 * 1024 * 1024
# Connections whose far end we chose: Dandelion++ picks stem relays among these.
OUTBOUND_TX_RELAY = frozenset({ConnectionKind.FULL_RELAY, ConnectionKind.PERSISTENT})

Handler = Callable[[PeerId, Any, float], list[Action]]


class Gossip:
    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config.relay
        self.dandelion_enabled = not node.flood and config.dandelion
        self.tx_relay = TxRelay(config, node.mempool, node.rng, node.peer_manager.punish)
        self.block_relay = BlockRelay(config.compact_blocks, node.rng)
        self.dandelion = Dandelion(config, node.rng)
        self.stempool = Mempool(node.chain.ledger, max_bytes=MAX_STEMPOOL_BYTES)

    def message_handlers(self) -> dict[type, Handler]:
        return {
            Inventory: self._inventory,
            GetData: self._get_data,
            NotFound: self._not_found,
            Transactions: self._transactions,
            StemTransaction: lambda peer, m, now: self.stem(m.transaction, None, peer, now),
            SendCompact: lambda peer, m, now: self.block_relay.on_send_compact(
                peer, m.high_bandwidth
            ),
            CompactBlock: self._compact_block,
            GetBlockTxn: lambda peer, m, now: self.block_relay.on_get_block_txn(
                peer, m, self._main_block
            ),
            BlockTxn: self._block_txn,
        }

    # --- life cycle and peers -------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        return self.dandelion.start(now) if self.dandelion_enabled else []

    def peer_connected(self, peer: PeerId, kind: ConnectionKind, now: float) -> list[Action]:
        self.block_relay.peer_connected(peer)
        self.dandelion.peer_connected(peer, kind in OUTBOUND_TX_RELAY)
        if kind is ConnectionKind.BLOCK_RELAY:
            return []
        return self.tx_relay.peer_connected(peer, kind is not ConnectionKind.INBOUND, now)

    def peer_disconnected(self, peer: PeerId, now: float) -> list[Action]:
        self.dandelion.peer_disconnected(peer)
        return self.tx_relay.peer_disconnected(peer, now) + self.block_relay.peer_disconnected(
            peer, now
        )

    def greet(self, peer: PeerId) -> list[Action]:
        return self.block_relay.greet(peer, self.node.chain.tip_hash)

    def timer(self, timer: str, now: float) -> list[Action] | None:
        actions = self.tx_relay.timer(timer, now)
        if actions is not None:
            return actions
        if timer == BLOCK_REQUEST_TIMER:
            return self.block_relay.timer(now)
        embargo = self.dandelion.timer(timer, now)
        if embargo is None:
            return None
        expired, actions = embargo
        for txid in expired:
            vtx = self.stempool.get(txid)
            if vtx is not None:
                actions += self._fluff(vtx, now)  # nobody fluffed it in time: we do
        return actions

    # --- chain events ---------------------------------------------------------------

    def block_connected(self, block: Block, vtxs: Sequence[VerifiedTx]) -> None:
        self.tx_relay.block_connected(block.header.height, [vtx.txid for vtx in vtxs])
        self.stempool.block_connected(vtxs)

    def block_disconnected(self, block: Block) -> None:
        self.tx_relay.block_disconnected(block.header.height)

    def blocks_connected(
        self, connected: Sequence[tuple[Block, Sequence[VerifiedTx]]], source: PeerId | None
    ) -> list[Action]:
        """Announce blocks that extended our chain; credit the peer that brought them."""
        actions: list[Action] = []
        for block, _ in connected:
            actions += self.block_relay.announce(block, block_hash(block), source)
        if connected and source is not None:
            actions += self.block_relay.delivered_first(source)
        return actions

    def _main_block(self, wanted: bytes) -> Block | None:
        chain = self.node.chain
        return chain.block(wanted) if chain.entry(wanted) is not None else None

    # --- transactions ---------------------------------------------------------------

    def fluffed(self, txid: bytes, source: PeerId | None, now: float) -> list[Action]:
        """A transaction entered the mempool: it is public now; announce it."""
        self._out_of_stem([txid])
        return self.tx_relay.announce(txid, source, now)

    def _out_of_stem(self, txids: list[bytes]) -> None:
        """Public now: whatever of these the stempool held leaves it and its embargo."""
        if len(self.stempool):
            for txid in txids:
                if self.stempool.remove(txid) is not None:
                    self.dandelion.lift(txid)

    def _fluff(self, vtx: VerifiedTx, now: float) -> list[Action]:
        self.stempool.remove(vtx.txid)
        try:
            self.node.mempool.add(vtx, now)
        except ValidationError as error:
            return self.node.rejected(vtx.tx, error, now, None)
        return [TransactionAccepted(vtx.txid), *self.fluffed(vtx.txid, None, now)]

    def stem(
        self, tx: Transaction, raw: bytes | None, source: PeerId | None, now: float
    ) -> list[Action]:
        """A stem transaction, ours (`source` None) or a peer's: pass it along the stem,
        or fluff it if this node is a diffuser this epoch (or has nobody to stem to)."""
        node = self.node
        txid = txid_of(tx)
        if txid in node.mempool or txid in self.stempool:
            return []
        if not self.dandelion_enabled:
            return node.accept_transaction(tx, raw, now, source)
        relay = self.dandelion.route_own() if source is None else self.dandelion.route(source)
        if relay is None:
            return node.accept_transaction(tx, raw, now, source)
        vtx, refused = node.admit(self.stempool, tx, raw, now, source)
        if vtx is None:
            return refused
        return [
            TransactionStemmed(txid, relay),
            Send(relay, StemTransaction(tx)),
            *self.dandelion.embargo(txid, now),
        ]

    def _transactions(self, peer: PeerId, message: Transactions, now: float) -> list[Action]:
        """The answer to our requests: each new transaction into the mempool (what
        `Node.accept_transaction` does, for a whole message), the accepted ones
        announced together."""
        node, relay = self.node, self.tx_relay
        txs = message.transactions
        txids = [txid_of(tx) for tx in txs]
        actions = relay.delivered(peer, txids, now)
        pool = node.mempool
        in_pool = pool.has
        if node.flood:
            for tx, txid in zip(txs, txids):
                if not in_pool(txid):
                    actions += node.accept_transaction(tx, None, now, peer)
            return actions + relay.after_delivery(peer, now)
        admit = node.admit
        accepted: list[bytes] = []
        for tx, txid in zip(txs, txids):
            if not in_pool(txid):
                vtx, refused = admit(pool, tx, None, now, peer)
                if vtx is None:
                    actions += refused
                else:
                    accepted.append(txid)
        if accepted:
            actions += [TransactionAccepted(txid) for txid in accepted]
            self._out_of_stem(accepted)
            actions += relay.announce_many(accepted, peer, now)
        return actions + relay.after_delivery(peer, now)

    # --- inventory ------------------------------------------------------------------

    def _inventory(self, peer: PeerId, message: Inventory, now: float) -> list[Action]:
        if message.kind is InvKind.TRANSACTION:
            return self.tx_relay.on_inventory(peer, message.hashes, now)
        return self.block_relay.on_inventory(peer, message.hashes, now, self.node.chain.has_block)

    def _get_data(self, peer: PeerId, message: GetData, now: float) -> list[Action]:
        if message.kind is InvKind.TRANSACTION:
            return self.tx_relay.on_get_data(peer, message.hashes)
        return self.block_relay.on_get_data(peer, message.kind, message.hashes, self._main_block)

    def _not_found(self, peer: PeerId, message: NotFound, now: float) -> list[Action]:
        if message.kind is InvKind.TRANSACTION:
            return self.tx_relay.on_not_found(peer, message.hashes, now)
        return self.block_relay.on_not_found(peer, message.hashes, now)

    # --- compact blocks -------------------------------------------------------------

    def _candidates(self) -> Iterable[Transaction]:
        pools = itertools.chain(self.node.mempool, self.stempool)
        return (vtx.tx for vtx in pools)

    def _compact_block(self, peer: PeerId, message: CompactBlock, now: float) -> list[Action]:
        chain = self.node.chain
        this_hash = header_hash(message.header)
        if chain.has_block(this_hash):
            self.block_relay.arrived(this_hash)
            return []
        have_parent = chain.entry(message.header.parent) is not None
        block, actions = self.block_relay.on_compact(
            peer, message, this_hash, now, have_parent, self._candidates
        )
        if block is not None:
            actions += self.node.accept_block(block, now, peer)
        return actions

    def _block_txn(self, peer: PeerId, message: BlockTxn, now: float) -> list[Action]:
        block, actions = self.block_relay.on_block_txn(peer, message, now)
        if block is not None:
            actions += self.node.accept_block(block, now, peer)
        return actions

"""What a run measured: propagation, bytes by message kind, forks, and rejections."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from meshchain.core.events import (
    Action,
    BlockAccepted,
    BlockRejected,
    ChainReorganized,
    SyncFinished,
    TransactionAccepted,
    TransactionRejected,
)
from meshchain.core.wire.messages import (
    AnyMessage,
    BlockMessage,
    BlocksNotFound,
    BlockTxn,
    CompactBlock,
    GetBlock,
    GetBlocks,
    GetBlockTxn,
    GetData,
    GetHeaders,
    Headers,
    Inventory,
    NotFound,
    StemTransaction,
    SyncBlock,
    TransactionMessage,
    Transactions,
)

PERCENTILES = (50, 90, 95, 99)


MESSAGE_KINDS: dict[type, str] = {
    TransactionMessage: "transaction",
    Transactions: "transaction",
    StemTransaction: "stem",
    Inventory: "inventory",
    GetData: "request",
    NotFound: "request",
    BlockMessage: "block",
    CompactBlock: "compact_block",
    BlockTxn: "compact_block",
    GetBlock: "block_request",
    GetBlockTxn: "block_request",
    GetHeaders: "sync_request",
    GetBlocks: "sync_request",
    BlocksNotFound: "sync_request",
    Headers: "headers",
    SyncBlock: "sync_block",
}


def message_kind(message: AnyMessage) -> str:
    return MESSAGE_KINDS.get(message.__class__, "session")


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        empty: dict[str, float | None] = {f"p{p}": None for p in PERCENTILES}
        return empty | {"max": None, "count": 0}
    ordered = sorted(samples)
    result: dict[str, float | None] = {}
    for p in PERCENTILES:
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        result[f"p{p}"] = round(ordered[index], 6)
    result["max"] = round(ordered[-1], 6)
    result["count"] = len(ordered)
    return result


class Metrics:
    def __init__(self, nodes: int) -> None:
        self.nodes = nodes
        self.tx_origin: dict[bytes, float] = {}
        self.tx_source: dict[bytes, int] = {}  # txid -> the node it was submitted to
        self.block_producer: dict[bytes, int] = {}  # block hash -> the node that made it
        self.tx_reached: dict[bytes, int] = defaultdict(int)
        self.tx_delays: list[float] = []
        self.tx_full: list[float] = []  # time for a transaction to reach every node
        self.block_origin: dict[bytes, float] = {}
        self.block_reached: dict[bytes, int] = defaultdict(int)
        self.block_delays: list[float] = []
        self.block_full: list[float] = []
        self.bytes_sent: list[defaultdict[str, int]] = [defaultdict(int) for _ in range(nodes)]
        self.bytes_received: list[defaultdict[str, int]] = [defaultdict(int) for _ in range(nodes)]
        self.messages: dict[str, int] = defaultdict(int)
        self.reorgs = 0
        self.blocks_produced = 0
        self.rejected_blocks = 0
        self.rejected_transactions = 0
        self.sync_finished: dict[int, float] = {}  # node -> when its last sync finished

    def submitted(self, txid: bytes, now: float, node: int) -> None:
        self.tx_origin.setdefault(txid, now)
        self.tx_source.setdefault(txid, node)

    # `sent` and `received` run once per message: `message_kind` is inlined (and
    # `SimHost.receive` inlines `received`).
    def sent(self, node: int, message: AnyMessage, size: int, copies: int = 1) -> None:
        kind = MESSAGE_KINDS.get(message.__class__, "session")
        self.bytes_sent[node][kind] += size * copies
        self.messages[kind] += copies

    def received(self, node: int, message: AnyMessage, size: int) -> None:
        self.bytes_received[node][MESSAGE_KINDS.get(message.__class__, "session")] += size

    def notice(self, node: int, action: Action, now: float) -> None:
        if isinstance(action, TransactionAccepted):
            origin = self.tx_origin.get(action.txid)
            if origin is not None:
                self.tx_delays.append(now - origin)
                self.tx_reached[action.txid] += 1
                if self.tx_reached[action.txid] == self.nodes:
                    self.tx_full.append(now - origin)
        elif isinstance(action, BlockAccepted):
            if action.produced:
                self.block_origin[action.block_hash] = now
                self.block_producer[action.block_hash] = node
                self.blocks_produced += 1
            origin = self.block_origin.get(action.block_hash)
            if origin is not None:
                self.block_delays.append(now - origin)
                self.block_reached[action.block_hash] += 1
                if self.block_reached[action.block_hash] == self.nodes:
                    self.block_full.append(now - origin)
        elif isinstance(action, ChainReorganized):
            self.reorgs += 1
        elif isinstance(action, BlockRejected):
            self.rejected_blocks += 1
        elif isinstance(action, TransactionRejected):
            self.rejected_transactions += 1
        elif isinstance(action, SyncFinished):
            self.sync_finished[node] = now

    def bytes_per_node(self, table: list[defaultdict[str, int]]) -> dict[str, Any]:
        kinds = sorted({kind for row in table for kind in row})
        return {
            kind: {
                "mean": round(statistics.fmean(row[kind] for row in table), 3),
                "max": max(row[kind] for row in table),
                "min": min(row[kind] for row in table),
            }
            for kind in kinds
        }

    def summary(self) -> dict[str, Any]:
        transactions = len(self.tx_origin)
        return {
            "transactions_submitted": transactions,
            "blocks_produced": self.blocks_produced,
            "propagation_seconds": {
                "transaction": percentiles(self.tx_delays),
                "transaction_to_all_nodes": percentiles(self.tx_full),
                "block": percentiles(self.block_delays),
                "block_to_all_nodes": percentiles(self.block_full),
            },
            "bytes_sent_per_node": self.bytes_per_node(self.bytes_sent),
            "bytes_received_per_node": self.bytes_per_node(self.bytes_received),
            "messages": dict(sorted(self.messages.items())),
            "messages_per_transaction": round(self.messages["transaction"] / transactions, 3)
            if transactions
            else None,
            "messages_per_block": round(self.messages["block"] / self.blocks_produced, 3)
            if self.blocks_produced
            else None,
            "reorganizations": self.reorgs,
            "rejected_blocks": self.rejected_blocks,
            "rejected_transactions": self.rejected_transactions,
        }

"""When this node first saw, connected and finalized each recent block: the measured
values behind the dashboard's propagation and finality charts (`block_times`).

Times are this node's wall clock in Unix milliseconds, as is a block's timestamp, which
its producer sets when it builds the block (BFT: the proposal; PoW: the template, so
mining time is included). "Seen" is the first message carrying the block or its header
that this node received or sent (a BFT proposal, a compact block, a whole block), or the
moment it connected the block if that came first (a block it made, one reconstructed in
the same step). Blocks connected while syncing are history, not propagation, and are
left out, as in the commit-latency metric.

Observers run inside `NodeDriver.feed`: they test an input's or action's type and
return for everything else, and keep bounded tables.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from meshchain.api.rpc import Method, Param
from meshchain.core.chain.block import block_hash, header_hash
from meshchain.core.events import Action, BlockAccepted, Input, MessageReceived, Send
from meshchain.core.wire.messages import BlockMessage, CompactBlock, ProposalMessage
from meshchain.runtime.driver import NodeDriver

MAX_BLOCK_TIMES = 100  # ours: recent blocks remembered (a chart shows fewer)
BLOCK_TIMES_DEFAULT = 30  # what `block_times` answers without a limit
# Ours: blocks seen but not connected yet (BFT proposals of rounds that failed, forks).
MAX_FIRST_SEEN = 256
CARRIERS = (ProposalMessage, CompactBlock, BlockMessage)


@dataclass
class BlockTime:
    height: int
    block_hash: bytes
    time_ms: int  # the block's timestamp
    seen_ms: int
    connected_ms: int
    produced: bool
    tx_count: int
    final_ms: int | None = None  # when this node's finalized height reached it

    def json(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "hash": self.block_hash.hex(),
            "time_ms": self.time_ms,
            "seen_ms": self.seen_ms,
            "connected_ms": self.connected_ms,
            "final_ms": self.final_ms,
            "produced": self.produced,
            "tx_count": self.tx_count,
        }


def carried_hash(message: object) -> bytes | None:
    """The hash of the block a message carries, if it carries one."""
    kind = type(message)
    if kind is ProposalMessage:
        assert isinstance(message, ProposalMessage)
        return block_hash(message.proposal.block)
    if kind is CompactBlock:
        assert isinstance(message, CompactBlock)
        return header_hash(message.header)
    if kind is BlockMessage:
        assert isinstance(message, BlockMessage)
        return block_hash(message.block)
    return None


class BlockTimes:
    """Recent blocks' timings at this node; `detach` before the driver goes."""

    def __init__(self, driver: NodeDriver, size: int = MAX_BLOCK_TIMES) -> None:
        self.driver = driver
        self.recent: deque[BlockTime] = deque(maxlen=size)
        self.first_seen: OrderedDict[bytes, int] = OrderedDict()
        self._last_sent: object = None  # one message is sent to every peer: hash it once
        driver.observers.append(self._on_action)
        driver.input_observers.append(self._on_input)

    def detach(self) -> None:
        self.driver.observers.remove(self._on_action)
        self.driver.input_observers.remove(self._on_input)

    def json(self, limit: int = BLOCK_TIMES_DEFAULT) -> dict[str, Any]:
        node = self.driver.node
        blocks = list(self.recent)[-limit:] if limit else []
        return {
            "node_id": node.config.peers.node_id.hex(),
            "engine": node.config.genesis.consensus.engine,
            "finality_depth": node.chain.engine.finality_depth,
            "blocks": [entry.json() for entry in blocks],
        }

    def methods(self) -> list[Method]:
        async def block_times(context: object, params: dict[str, Any]) -> dict[str, Any]:
            return self.json(params.get("limit", BLOCK_TIMES_DEFAULT))

        limit = {"type": "integer", "minimum": 0, "maximum": MAX_BLOCK_TIMES}
        return [
            Method(
                "block_times",
                block_times,
                "Recent blocks: timestamp, first seen, connected and finalized here (ms)",
                (Param("limit", limit, f"blocks (default {BLOCK_TIMES_DEFAULT})", False),),
            )
        ]

    # --- observers (inside NodeDriver.feed: never raise, never wait) -------------------

    def _on_input(self, event: Input) -> None:
        if type(event) is MessageReceived and type(event.message) in CARRIERS:
            self._seen(carried_hash(event.message))

    def _on_action(self, action: Action) -> None:
        kind = type(action)
        if kind is Send:
            assert isinstance(action, Send)
            message = action.message
            if type(message) in CARRIERS and message is not self._last_sent:
                self._last_sent = message
                self._seen(carried_hash(message))
        elif kind is BlockAccepted:
            assert isinstance(action, BlockAccepted)
            self._connected(action)

    def _seen(self, seen_hash: bytes | None) -> None:
        if seen_hash is None or seen_hash in self.first_seen:
            return
        if any(entry.block_hash == seen_hash for entry in self.recent):
            return  # connected already: a late copy, or a peer catching up
        self.first_seen[seen_hash] = self._now_ms()
        if len(self.first_seen) > MAX_FIRST_SEEN:
            self.first_seen.popitem(last=False)

    def _connected(self, accepted: BlockAccepted) -> None:
        node, now = self.driver.node, self._now_ms()
        seen = self.first_seen.pop(accepted.block_hash, now)
        header = node.chain.header(accepted.block_hash)
        if not node.sync.syncing and header is not None:
            self.recent.append(
                BlockTime(
                    accepted.height,
                    accepted.block_hash,
                    header.timestamp_ms,
                    min(seen, now),
                    now,
                    accepted.produced,
                    accepted.tx_count,
                )
            )
        finalized = node.chain.finalized_height
        if finalized is None:
            return
        for entry in reversed(self.recent):
            if entry.final_ms is not None:
                break
            if entry.height <= finalized and node.chain.is_main(entry.block_hash):
                entry.final_ms = now

    def _now_ms(self) -> int:
        return int(self.driver.clock() * 1000)

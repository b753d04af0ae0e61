"""`/metrics` for Prometheus: the node's state read at scrape time, plus what an
observer counts from the node's notices.

Each server has its own registry (several nodes may share a process in tests). State
that the node keeps anyway (peers, mempool, height, bans, rate-limit drops, traffic) is
read when Prometheus scrapes; notices are counted in plain integers, since one
`TransactionAccepted` arrives per relayed transaction and a locked counter per call
would cost more than the count.

Finality latency, as `meshchain_block_commit_latency_seconds`: from a block's timestamp,
which its proposer sets when it builds the block, to the moment this node connects it.
On a BFT chain that is proposal to commit (plus any clock difference between the
proposer and this node); on PoA and PoW it is production to arrival here. Blocks
connected while syncing are old and not counted. `meshchain_block_interval_seconds`
is the time between consecutive blocks connected here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from meshchain.core.events import (
    Action,
    BlockAccepted,
    ConnectionKind,
    PeerPunished,
    TransactionAccepted,
    TransactionRejected,
)
from meshchain.core.peers.bans import BanKind
from meshchain.runtime.driver import NodeDriver
from meshchain.runtime.network import P2PService, Traffic

# Seconds: sub-second BFT commits up to minutes for proof of work.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class NodeMetrics:
    """The registry behind `/metrics`, and the observer that feeds its counters."""

    def __init__(
        self,
        driver: NodeDriver,
        p2p: P2PService | None,
        websocket_clients: Callable[[], int] = lambda: 0,
    ) -> None:
        self.driver = driver
        self.registry = CollectorRegistry(auto_describe=False)
        self.commit_latency = Histogram(
            "meshchain_block_commit_latency_seconds",
            "From a block's timestamp (set by its proposer) to its connection here",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.block_interval = Histogram(
            "meshchain_block_interval_seconds",
            "Time between consecutive blocks connected here",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.blocks: dict[str, int] = {"produced": 0, "received": 0}
        self.tx_accepted = 0
        self.tx_rejected: dict[str, int] = {}
        self.punished: dict[tuple[str, str], int] = {}
        self.api_calls: dict[str, int] = {}
        self._last_block_at: float | None = None
        self._counted: dict[type, Callable[[Action], None]] = {
            TransactionAccepted: self._tx_accepted,
            BlockAccepted: self._block,
            TransactionRejected: self._tx_rejected,
            PeerPunished: self._punished,
        }
        self.registry.register(_NodeCollector(self, p2p, websocket_clients))
        driver.observers.append(self._on_action)

    def detach(self) -> None:
        self.driver.observers.remove(self._on_action)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def count_call(self, method: str) -> None:
        self.api_calls[method] = self.api_calls.get(method, 0) + 1

    def _on_action(self, action: Action) -> None:
        # Most actions are Sends, one per peer per message: one lookup lets them pass.
        counted = self._counted.get(type(action))
        if counted is not None:
            counted(action)

    def _tx_accepted(self, action: Action) -> None:
        self.tx_accepted += 1

    def _tx_rejected(self, action: Action) -> None:
        assert isinstance(action, TransactionRejected)
        reason = action.code.name.lower()
        self.tx_rejected[reason] = self.tx_rejected.get(reason, 0) + 1

    def _punished(self, action: Action) -> None:
        assert isinstance(action, PeerPunished)
        key = (action.offence, action.penalty)
        self.punished[key] = self.punished.get(key, 0) + 1

    def _block(self, accepted: Action) -> None:
        assert isinstance(accepted, BlockAccepted)
        self.blocks["produced" if accepted.produced else "received"] += 1
        node, now = self.driver.node, self.driver.clock()
        if node.sync.syncing:
            self._last_block_at = None
            return
        header = node.chain.header(accepted.block_hash)
        if header is not None:
            self.commit_latency.observe(max(0.0, now - header.timestamp_ms / 1000))
        if self._last_block_at is not None:
            self.block_interval.observe(now - self._last_block_at)
        self._last_block_at = now


class _NodeCollector(Collector):
    """Reads the node, the transport's traffic and the counters at scrape time."""

    def __init__(
        self, metrics: NodeMetrics, p2p: P2PService | None, websocket_clients: Callable[[], int]
    ) -> None:
        self.metrics = metrics
        self.p2p = p2p
        self.websocket_clients = websocket_clients

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        node, now = metrics.driver.node, metrics.driver.clock()
        manager = node.peer_manager
        peers = GaugeMetricFamily(
            "meshchain_peers", "Open peer connections", labels=["direction", "kind"]
        )
        counts: dict[tuple[str, str], int] = {}
        for record in manager.peers.values():
            key = ("outbound" if record.outbound else "inbound", record.kind.value)
            counts[key] = counts.get(key, 0) + 1
        for kind in ConnectionKind:
            direction = "inbound" if kind is ConnectionKind.INBOUND else "outbound"
            peers.add_metric([direction, kind.value], counts.get((direction, kind.value), 0))
        yield peers
        yield _gauge("meshchain_chain_height", "Height of the best chain", node.chain.height)
        finalized = node.chain.finalized_height
        if finalized is not None:
            yield _gauge(
                "meshchain_chain_finalized_height", "Highest irreversible block", finalized
            )
        yield _gauge("meshchain_mempool_transactions", "Transactions waiting", len(node.mempool))
        yield _gauge("meshchain_mempool_bytes", "Encoded bytes waiting", node.mempool.bytes_used)
        bans = GaugeMetricFamily("meshchain_bans", "Live ban list entries", labels=["kind"])
        live = manager.bans.entries(now)
        for ban_kind in BanKind:
            count = sum(1 for entry in live if entry.kind is ban_kind)
            bans.add_metric([ban_kind.name.lower()], count)
        yield bans
        yield _counter(
            "meshchain_rate_limited_messages",
            "Peer messages dropped over a rate limit",
            "limit",
            manager.counters.rate_limited,
        )
        punished = CounterMetricFamily(
            "meshchain_peers_punished", "Peers punished", labels=["offence", "penalty"]
        )
        for (offence, penalty), count in metrics.punished.items():
            punished.add_metric([offence, penalty], count)
        yield punished
        yield _counter("meshchain_blocks_accepted", "Blocks connected", "origin", metrics.blocks)
        yield CounterMetricFamily(
            "meshchain_transactions_accepted", "Entered the mempool", value=metrics.tx_accepted
        )
        yield _counter("meshchain_transactions_rejected", "Refused", "reason", metrics.tx_rejected)
        yield _counter("meshchain_api_calls", "API calls by method", "method", metrics.api_calls)
        yield _gauge("meshchain_api_websocket_clients", "Open WebSockets", self.websocket_clients())
        if self.p2p is not None:
            yield from _traffic(self.p2p.traffic)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


def _traffic(traffic: Traffic) -> Iterator[Metric]:
    for direction, table in (("received", traffic.received), ("sent", traffic.sent)):
        messages = CounterMetricFamily(
            f"meshchain_p2p_messages_{direction}", f"Messages {direction}", labels=["type"]
        )
        sizes = CounterMetricFamily(
            f"meshchain_p2p_message_bytes_{direction}",
            f"Encoded message bytes {direction}",
            labels=["type"],
        )
        for kind, (count, size) in sorted(table.items(), key=lambda item: item[0].__name__):
            messages.add_metric([kind.__name__], count)
            sizes.add_metric([kind.__name__], size)
        yield messages
        yield sizes
    yield CounterMetricFamily(
        "meshchain_p2p_wire_bytes_received", "Bytes read (framing included)", traffic.wire_received
    )
    yield CounterMetricFamily(
        "meshchain_p2p_wire_bytes_sent", "Bytes written (framing included)", traffic.wire_sent
    )

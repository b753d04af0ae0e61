"""How fast gossip could possibly be on a run's graph, and what relay costs per item.

The lower bound: an item that left its origin at time t cannot reach a node before t
plus the shortest-path latency between them over the links that exist (Dijkstra on the
one-way link latencies the network model drew). Real relay adds serialization, queueing,
trickle timers, requests and stems on top; the ratio of measured to bound shows how
much. Bounds are computed for the first transactions and blocks of a run (a fixed
sample, so the report stays cheap and deterministic) on the links open at the end.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from meshchain.sim.metrics import percentiles

if TYPE_CHECKING:
    from meshchain.sim.world import World

# Ours: origins sampled per kind for the bound (one Dijkstra each over the whole graph).
BOUND_SAMPLE = 100
# Message kinds (metrics.MESSAGE_KINDS) that carry transactions and blocks.
TRANSACTION_KINDS = ("transaction", "inventory", "request", "stem")
BLOCK_KINDS = ("block", "compact_block", "block_request")


def _distances(world: World, origin: int) -> dict[int, float]:
    latency = world.network.latency
    dist = {origin: 0.0}
    heap = [(0.0, origin)]
    while heap:
        d, node = heapq.heappop(heap)
        if d > dist.get(node, float("inf")):
            continue
        for peer in sorted(world.hosts[node].connected):
            candidate = d + latency(node, peer)
            if candidate < dist.get(peer, float("inf")):
                dist[peer] = candidate
                heapq.heappush(heap, (candidate, peer))
    return dist


def _bounds(world: World, origins: list[int]) -> dict[str, Any]:
    per_node: list[float] = []
    to_all: list[float] = []
    cache: dict[int, dict[int, float]] = {}
    for origin in origins:
        dist = cache.get(origin)
        if dist is None:
            dist = cache[origin] = _distances(world, origin)
        delays = [d for node, d in dist.items() if node != origin]
        per_node += delays
        if len(dist) == len(world.online()):
            to_all.append(max(delays, default=0.0))
    return {"to_each_node": percentiles(per_node), "to_all_nodes": percentiles(to_all)}


def lower_bounds(world: World) -> dict[str, Any]:
    """Shortest-path propagation bounds for sampled transactions and blocks."""
    metrics = world.metrics
    tx_origins = list(metrics.tx_source.values())[:BOUND_SAMPLE]
    block_origins = list(metrics.block_producer.values())[:BOUND_SAMPLE]
    return {
        "transaction": _bounds(world, tx_origins),
        "block": _bounds(world, block_origins),
        "sampled": {"transactions": len(tx_origins), "blocks": len(block_origins)},
    }


def relay_cost(world: World) -> dict[str, Any]:
    """Bytes each node sends per transaction and per block, by the kinds that carry them."""
    metrics = world.metrics
    nodes = max(1, len(metrics.bytes_sent))
    txs = len(metrics.tx_origin)
    blocks = metrics.blocks_produced

    def per_item(kinds: tuple[str, ...], items: int) -> float | None:
        if not items:
            return None
        total = sum(row[kind] for row in metrics.bytes_sent for kind in kinds)
        return round(total / nodes / items, 3)

    return {
        "bytes_per_node_per_transaction": per_item(TRANSACTION_KINDS, txs),
        "bytes_per_node_per_block": per_item(BLOCK_KINDS, blocks),
        "mean_block_bytes": _mean_block_bytes(world),
    }


def _mean_block_bytes(world: World) -> float | None:
    sizes = [
        len(world.block_pool[h]) for h in world.metrics.block_producer if h in world.block_pool
    ]
    return round(sum(sizes) / len(sizes), 1) if sizes else None


def block_relay_summary(world: World) -> dict[str, Any]:
    """What a block cost to relay in a run: bytes, and how long it took to spread."""
    delays = world.metrics.summary()["propagation_seconds"]
    return {
        **relay_cost(world),
        "block": delays["block"],
        "block_to_all_nodes": delays["block_to_all_nodes"],
    }

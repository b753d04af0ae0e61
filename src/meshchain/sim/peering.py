"""What discovery must achieve, checked during a run, and the figures that show it.

Two invariants for scenarios with discovery (they are pluggable like the others):
- `OutboundTargets`: no honest node stays short of its outbound targets (full-relay and
  block-relay-only) for longer than the scenario's grace period, counted from when it
  started or last lost a peer;
- `HonestGraphConnected`: the honest online nodes form one connected graph, apart from
  nodes younger than the grace period (a node that has just joined has not dialled yet).
`peer_report` summarises connections, time to reach the targets and peer-manager counters.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from meshchain.core.events import ConnectionKind
from meshchain.sim.metrics import percentiles

if TYPE_CHECKING:
    from meshchain.sim.host import SimHost
    from meshchain.sim.world import World

MAX_LISTED_PROBLEMS = 10


def outbound_counts(host: SimHost) -> tuple[int, int]:
    """(full-relay, block-relay-only) outbound connections of a host's node."""
    if host.node is None:
        return 0, 0
    kinds = list(host.node.peers.values())
    return kinds.count(ConnectionKind.FULL_RELAY), kinds.count(ConnectionKind.BLOCK_RELAY)


def meets_targets(host: SimHost) -> bool:
    assert host.node is not None
    config = host.node.peer_manager.config
    full, block = outbound_counts(host)
    return full >= config.outbound_full_relay and block >= config.block_relay_only


class OutboundTargets:
    """Each honest node reaches its outbound targets within the grace period and keeps
    them; also records how long each node took the first time (for the report)."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.short_since: dict[int, float] = {}
        self.started: dict[int, tuple[int, float]] = {}  # node -> (start count, when)
        self.time_to_target: dict[int, float] = {}

    def __call__(self, world: World, final: bool) -> list[str]:
        now = world.sim.now
        problems: list[str] = []
        for host in world.honest_online():
            run = self.started.get(host.index)
            if run is None or run[0] != host.starts:
                self.started[host.index] = (host.starts, now)
                self.short_since[host.index] = now
                continue
            if meets_targets(host):
                self.short_since.pop(host.index, None)
                self.time_to_target.setdefault(host.index, now - run[1])
                continue
            since = self.short_since.setdefault(host.index, now)
            if now - since > self.grace:
                full, block = outbound_counts(host)
                problems.append(
                    f"node {host.index} short of its outbound targets for {now - since:.0f} s "
                    f"({full} full-relay, {block} block-relay-only)"
                )
        return _bounded(problems)


class HonestGraphConnected:
    """The honest online nodes (past their grace period) form one connected graph."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.first_seen: dict[tuple[int, int], float] = {}

    def __call__(self, world: World, final: bool) -> list[str]:
        now = world.sim.now
        honest = {h.index: h for h in world.honest_online()}
        settled = []
        for index, host in honest.items():
            seen = self.first_seen.setdefault((index, host.starts), now)
            if now - seen >= self.grace:
                settled.append(index)
        if len(settled) < 2:
            return []
        reached = _component(world, settled[0], set(honest))
        cut_off = [index for index in settled if index not in reached]
        if not cut_off:
            return []
        shown = ", ".join(map(str, cut_off[:MAX_LISTED_PROBLEMS]))
        return [f"honest graph split: {len(cut_off)} settled nodes cut off ({shown})"]


def _component(world: World, start: int, allowed: set[int]) -> set[int]:
    seen, queue = {start}, deque([start])
    while queue:
        for peer in world.hosts[queue.popleft()].connected:
            if peer in allowed and peer not in seen:
                seen.add(peer)
                queue.append(peer)
    return seen


def _bounded(problems: list[str]) -> list[str]:
    if len(problems) > MAX_LISTED_PROBLEMS:
        extra = len(problems) - MAX_LISTED_PROBLEMS
        return [*problems[:MAX_LISTED_PROBLEMS], f"... and {extra} more nodes"]
    return problems


def peer_report(world: World, targets: OutboundTargets | None) -> dict[str, Any]:
    """Connections and peer-manager figures over the honest online nodes at the end."""
    hosts = [h for h in world.honest_online() if h.node is not None]
    full = [outbound_counts(h)[0] for h in hosts]
    block = [outbound_counts(h)[1] for h in hosts]
    degree = [len(h.connected) for h in hosts]
    books = [len(h.node.peer_manager.book) for h in hosts if h.node is not None]
    counters = [h.node.peer_manager.counters for h in hosts if h.node is not None]
    report: dict[str, Any] = {
        "honest_online": len(hosts),
        "at_outbound_targets": sum(1 for h in hosts if meets_targets(h)),
        "full_relay_outbound": percentiles([float(x) for x in full]),
        "block_relay_outbound": percentiles([float(x) for x in block]),
        "connections_per_node": percentiles([float(x) for x in degree]),
        "address_book_size": percentiles([float(x) for x in books]),
        "graph_connected": _connected(world, hosts),
        "dials": sum(c.dials for c in counters),
        "dial_failures": sum(c.dial_failures for c in counters),
        "evictions": sum(c.evictions for c in counters),
        "refused_inbound": sum(c.refused_inbound for c in counters),
        "punished": sum(c.punished for c in counters),
    }
    if targets is not None:
        report["seconds_to_outbound_targets"] = percentiles(sorted(targets.time_to_target.values()))
        report["nodes_that_reached_targets"] = len(targets.time_to_target)
    return report


def _connected(world: World, hosts: list[SimHost]) -> bool:
    if not hosts:
        return False
    allowed = {h.index for h in hosts}
    return len(_component(world, hosts[0].index, allowed)) == len(allowed)

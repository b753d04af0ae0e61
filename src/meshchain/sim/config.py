"""What a simulation run is made of: the typed form a scenario file is parsed into."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LatencySpec:
    """One-way link latency. Each link draws its latency once (TCP keeps order)."""

    model: str = "constant"  # constant | uniform | lognormal | regions
    ms: float = 50.0  # constant
    low_ms: float = 10.0  # uniform
    high_ms: float = 100.0
    median_ms: float = 50.0  # lognormal
    sigma: float = 0.5
    regions: tuple[str, ...] = ()  # regions: names, nodes spread round-robin
    matrix_ms: tuple[tuple[float, ...], ...] = ()  # one-way ms between regions


@dataclass(frozen=True)
class PartitionSpec:
    """Groups of node indexes cut apart from `start` until `end` (seconds)."""

    start: float
    end: float
    groups: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ChurnSpec:
    """Every `interval` seconds, `fraction` of the nodes go offline for `downtime`."""

    interval: float
    fraction: float
    downtime: float
    start: float = 0.0


@dataclass(frozen=True)
class CrashSpec:
    node: int
    at: float
    restart_at: float | None = None  # None: it stays down


@dataclass(frozen=True)
class AdversarySpec:
    kind: str  # spy | silent | crash | dropper
    nodes: tuple[int, ...]
    drop_probability: float = 1.0  # dropper


@dataclass(frozen=True)
class SimConfig:
    name: str = "unnamed"
    description: str = ""
    nodes: int = 50
    out_degree: int = 8  # static topology: links each node dials; discovery: its target
    # Discovery: nodes start from the first `bootstrap_nodes` nodes and find the rest by
    # peer exchange, filling `out_degree` full-relay and `block_relay_only` slots.
    discovery: bool = False
    bootstrap_nodes: int = 3
    block_relay_only: int = 2
    max_inbound: int = 117
    # Address groups (IPv4 /16 networks) the nodes are spread over; 0: one per node.
    groups: int = 0
    duration: float = 120.0  # virtual seconds
    settle: float = 30.0  # final seconds without new transactions or faults
    latency: LatencySpec = field(default_factory=LatencySpec)
    upload_bps: float | None = None  # None: unlimited
    download_bps: float | None = None
    loss: float = 0.0
    tx_rate: float = 5.0  # transactions per second, network-wide
    wallets: int = 100
    authorities: int = 4
    block_interval: float = 10.0
    finality_depth: int = 6  # blocks buried this deep count as final (PoA has no votes)
    partitions: tuple[PartitionSpec, ...] = ()
    churn: ChurnSpec | None = None
    crashes: tuple[CrashSpec, ...] = ()
    adversaries: tuple[AdversarySpec, ...] = ()

"""What a simulation run is made of: the typed form a scenario file is parsed into."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshchain.core.relay.config import RelayConfig


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
class RandomFaultSpec:
    """Partitions drawn from the run's seed: each splits the nodes into two or three
    random groups for up to `max_partition_seconds`, healed before the settle period."""

    partitions: int = 2
    max_partition_seconds: float = 20.0


@dataclass(frozen=True)
class ChurnSpec:
    """Every `interval` seconds, `fraction` of the nodes go offline for `downtime`."""

    interval: float
    fraction: float
    downtime: float
    start: float = 0.0


@dataclass(frozen=True)
class ReplaceSpec:
    """Every `interval` seconds, `fraction` of the nodes leave for good and as many new
    nodes (fresh keys, addresses and stores) join, from `start` until the settle period."""

    interval: float
    fraction: float
    start: float = 0.0


@dataclass(frozen=True)
class CrashSpec:
    node: int
    at: float
    restart_at: float | None = None  # None: it stays down


@dataclass(frozen=True)
class AdversarySpec:
    kind: str  # spy | silent | crash | dropper | eclipse
    nodes: tuple[int, ...]
    drop_probability: float = 1.0  # dropper
    # eclipse: the victim, the attacker's addresses and their groups, when the victim
    # restarts, and the largest share of runs in which it may be fully eclipsed.
    victim: int = 0
    fake_addresses: int = 10_000
    attack_groups: int = 8
    restart_at: float | None = None
    max_eclipse_probability: float = 0.01


@dataclass(frozen=True)
class SyncSpec:
    """A sync experiment: every node but the last holds `blocks` preloaded blocks (made
    at world setup, not mined); the last node joins at `join_at` with `sources[0]` of
    them as its peers. Other entries of `sources` are further runs to compare with."""

    blocks: int
    txs_per_block: int = 0
    sources: tuple[int, ...] = (1,)
    join_at: float = 1.0


@dataclass(frozen=True)
class SimConfig:
    name: str = "unnamed"
    description: str = ""
    repeat: int = 1  # runs, with seeds seed .. seed + repeat - 1, reported together
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
    # Discovery invariants: how long an honest node may be short of its outbound targets
    # (or, having just joined, outside the connected graph).
    target_grace: float = 60.0
    duration: float = 120.0  # virtual seconds
    settle: float = 30.0  # final seconds without new transactions or faults
    latency: LatencySpec = field(default_factory=LatencySpec)
    upload_bps: float | None = None  # None: unlimited
    download_bps: float | None = None
    loss: float = 0.0
    tx_rate: float = 5.0  # transactions per second, network-wide
    tx_data_bytes: int = 0  # random payload per transaction (bigger transactions)
    wallets: int = 100
    authorities: int = 4  # PoA block signers, or PoW miners, on nodes 0..authorities-1
    engine: str = "poa"  # "poa" (private chain), "pow" (public, mined), "bft" (consortium)
    hashrate: float = 100.0  # pow: hashes per virtual second of each miner
    # bft: the propose, vote and commit timeouts in seconds (CometBFT's defaults).
    bft_timeouts: tuple[float, float, float] = (3.0, 1.0, 1.0)
    block_interval: float = 10.0
    finality_depth: int = 6  # blocks buried this deep count as final (PoA has no votes)
    # At the end honest tips may differ by blocks still in flight: one at a block every
    # few seconds, a few when blocks come several a second (fast BFT settings).
    convergence_lag: int = 1
    partitions: tuple[PartitionSpec, ...] = ()
    churn: ChurnSpec | None = None
    replace: ReplaceSpec | None = None
    crashes: tuple[CrashSpec, ...] = ()
    random_faults: RandomFaultSpec | None = None
    adversaries: tuple[AdversarySpec, ...] = ()
    relay: RelayConfig = field(default_factory=RelayConfig)  # every node's relay settings
    # Run again with compact blocks off and report both (scenarios/propagation.toml).
    compare_full_blocks: bool = False
    sync: SyncSpec | None = None  # a sync experiment (scenarios/sync.toml)

    @property
    def spare_nodes(self) -> int:
        """Nodes that start offline and join as replacements (`replace`)."""
        spec = self.replace
        if spec is None:
            return 0
        quiet_from = max(0.0, self.duration - self.settle)
        rounds = (
            0 if spec.start > quiet_from else int((quiet_from - spec.start) // spec.interval) + 1
        )
        return rounds * round(spec.fraction * self.nodes)

    @property
    def total_nodes(self) -> int:
        return self.nodes + self.spare_nodes

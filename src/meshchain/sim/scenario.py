"""Scenario files: TOML in, a validated `SimConfig` out, or a `ConfigError` naming the key.

The file is checked in two passes, both before anything runs. msgspec structs with
`forbid_unknown_fields` catch unknown keys, wrong types and out-of-range numbers; then the
rules that tie keys together (an out-degree the node count can satisfy, node indexes that
exist, faults that end before the settle period) are checked here. Every message ends with
the key path in msgspec's form, "- at `$.network.nodes`", so one format covers both passes.
The layout is documented in docs/simulator.md.

Lists of node indexes (partition groups, adversary nodes) take integers and inclusive
ranges written as strings: `[0, 1, "10-19"]`.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec

from meshchain.core.chain.ledger import MAX_MONEY
from meshchain.core.chain.tx import MAX_TX_DATA_SIZE
from meshchain.core.relay.config import RelayConfig, RelayMode
from meshchain.errors import ConfigError
from meshchain.sim.adversary import ADVERSARIES
from meshchain.sim.config import (
    AdversarySpec,
    ChurnSpec,
    CrashSpec,
    LatencySpec,
    PartitionSpec,
    RandomFaultSpec,
    ReplaceSpec,
    SimConfig,
    SyncSpec,
)
from meshchain.sim.world import WALLET_FUNDS

_DEFAULT = SimConfig()
_RELAY = RelayConfig()
_LATENCY = LatencySpec()
MAX_SECONDS = 10_000_000.0  # virtual seconds: bounds keep inf and typos out
MAX_MS = 600_000.0
MAX_NODES = 100_000
ADVERSARY_KINDS = tuple(ADVERSARIES)  # spy, silent, crash, dropper, and any added later
LATENCY_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": ("ms",),
    "uniform": ("low_ms", "high_ms"),
    "lognormal": ("median_ms", "sigma"),
    "regions": ("regions", "matrix_ms"),
}
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")

Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
Interval = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
Millis = Annotated[float, msgspec.Meta(ge=0, le=MAX_MS)]
Bandwidth = Annotated[float, msgspec.Meta(gt=0, le=1e15)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
NodeRefs = list[int | str]


class _Latency(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str = _LATENCY.model
    ms: Millis | None = None
    low_ms: Millis | None = None
    high_ms: Millis | None = None
    median_ms: Annotated[float, msgspec.Meta(gt=0, le=MAX_MS)] | None = None
    sigma: Annotated[float, msgspec.Meta(ge=0, le=10)] | None = None
    regions: list[Annotated[str, msgspec.Meta(min_length=1)]] | None = None
    matrix_ms: list[list[Millis]] | None = None


class _Network(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    nodes: Annotated[int, msgspec.Meta(ge=2, le=MAX_NODES)]
    out_degree: Annotated[int, msgspec.Meta(ge=1)] = _DEFAULT.out_degree
    upload_bps: Bandwidth | None = None
    download_bps: Bandwidth | None = None
    loss: Annotated[float, msgspec.Meta(ge=0, lt=1)] = _DEFAULT.loss
    latency: _Latency = msgspec.field(default_factory=_Latency)
    discovery: bool = _DEFAULT.discovery
    bootstrap_nodes: Annotated[int, msgspec.Meta(ge=1)] = _DEFAULT.bootstrap_nodes
    block_relay_only: Annotated[int, msgspec.Meta(ge=0, le=64)] = _DEFAULT.block_relay_only
    max_inbound: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = _DEFAULT.max_inbound
    groups: Annotated[int, msgspec.Meta(ge=0, le=65_536)] = _DEFAULT.groups
    target_grace: Interval = _DEFAULT.target_grace


class _Workload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    tx_rate: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = _DEFAULT.tx_rate
    tx_data_bytes: Annotated[int, msgspec.Meta(ge=0, le=MAX_TX_DATA_SIZE)] = _DEFAULT.tx_data_bytes
    wallets: Annotated[int, msgspec.Meta(ge=1, le=MAX_MONEY // WALLET_FUNDS)] = _DEFAULT.wallets
    authorities: Annotated[int, msgspec.Meta(ge=1)] = _DEFAULT.authorities
    engine: str = _DEFAULT.engine
    hashrate: Annotated[float, msgspec.Meta(gt=0, le=1e9)] = _DEFAULT.hashrate
    bft_timeout_propose: Annotated[float, msgspec.Meta(ge=0.001, le=3600)] = _DEFAULT.bft_timeouts[
        0
    ]
    bft_timeout_vote: Annotated[float, msgspec.Meta(ge=0.001, le=3600)] = _DEFAULT.bft_timeouts[1]
    bft_timeout_commit: Annotated[float, msgspec.Meta(ge=0, le=3600)] = _DEFAULT.bft_timeouts[2]
    # Block timestamps are whole milliseconds, so one is the shortest interval.
    block_interval: Annotated[float, msgspec.Meta(ge=0.001, le=MAX_SECONDS)] = (
        _DEFAULT.block_interval
    )


class _Partition(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    start: Seconds
    end: Seconds
    groups: list[NodeRefs]


class _Churn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    interval: Interval
    fraction: float
    downtime: Interval
    start: Seconds = 0.0


class _Replace(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    interval: Interval
    fraction: Annotated[float, msgspec.Meta(gt=0, le=1)]
    start: Seconds = 0.0


class _Crash(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    node: int
    at: Seconds
    restart_at: Seconds | None = None


class _RandomFaults(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    partitions: Annotated[int, msgspec.Meta(ge=0, le=1_000)] = 2
    max_partition_seconds: Interval = 20.0


class _Faults(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    random: _RandomFaults | None = None
    partitions: list[_Partition] = []
    churn: _Churn | None = None
    replace: _Replace | None = None
    crashes: list[_Crash] = []


class _Adversary(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    kind: str
    nodes: NodeRefs
    drop_probability: Probability | None = None  # dropper only
    victim: int | None = None  # eclipse only, and so are the four below
    fake_addresses: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    attack_groups: Annotated[int, msgspec.Meta(ge=1, le=65_536)] | None = None
    restart_at: Seconds | None = None
    max_eclipse_probability: Probability | None = None


class _Relay(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    mode: str = _RELAY.mode.value
    compact_blocks: bool = _RELAY.compact_blocks
    dandelion: bool = _RELAY.dandelion
    fluff_probability: Probability = _RELAY.fluff_probability
    outbound_trickle: Interval = _RELAY.outbound_trickle
    inbound_trickle: Interval = _RELAY.inbound_trickle
    epoch: Interval = _RELAY.epoch
    epoch_jitter: Seconds = _RELAY.epoch_jitter
    embargo_mean: Interval = _RELAY.embargo_mean
    compare_full_blocks: bool = _DEFAULT.compare_full_blocks


class _Sync(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    blocks: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    txs_per_block: Annotated[int, msgspec.Meta(ge=0, le=1_000)] = 0
    sources: Annotated[list[Annotated[int, msgspec.Meta(ge=1)]], msgspec.Meta(min_length=1)] = (
        msgspec.field(default_factory=lambda: [1])
    )
    join_at: Seconds = 1.0


class _Scenario(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    description: str = ""
    repeat: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
    duration: Interval
    settle: Seconds = _DEFAULT.settle
    finality_depth: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = _DEFAULT.finality_depth
    convergence_lag: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = _DEFAULT.convergence_lag
    network: _Network
    workload: _Workload = msgspec.field(default_factory=_Workload)
    faults: _Faults = msgspec.field(default_factory=_Faults)
    adversaries: list[_Adversary] = []
    relay: _Relay = msgspec.field(default_factory=_Relay)
    sync: _Sync | None = None


class _InvalidError(Exception):
    """A semantic problem at a key path; becomes a ConfigError with the source prefixed."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{problem} - at `{path}`")


def load_scenario(path: str | Path) -> SimConfig:
    """Read and validate a scenario file; any problem is a ConfigError naming the key."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return scenario_from_mapping(data, source=str(path))


def scenario_from_mapping(data: dict[str, Any], *, source: str | None = None) -> SimConfig:
    """Validate an already parsed scenario (a TOML document's dict)."""
    prefix = f"{source}: " if source else ""
    try:
        scenario = msgspec.convert(data, _Scenario)
        return _build(scenario)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{prefix}{exc}") from None
    except _InvalidError as exc:
        raise ConfigError(f"{prefix}{exc}") from None


# --- the rules that tie keys together ---------------------------------------------------


def _build(s: _Scenario) -> SimConfig:
    net, work = s.network, s.workload
    nodes = net.nodes
    if net.out_degree >= nodes:
        raise _InvalidError(
            "$.network.out_degree",
            f"out_degree {net.out_degree} needs at least {net.out_degree + 1} nodes but "
            f"there are {nodes} (impossible topology)",
        )
    if work.authorities > nodes:
        raise _InvalidError(
            "$.workload.authorities",
            f"{work.authorities} authorities but only {nodes} nodes (authorities run on "
            "nodes 0..authorities-1)",
        )
    if net.bootstrap_nodes > nodes:
        raise _InvalidError(
            "$.network.bootstrap_nodes",
            f"{net.bootstrap_nodes} bootstrap nodes but only {nodes} nodes",
        )
    if s.settle > s.duration:
        raise _InvalidError("$.settle", f"settle {s.settle} is longer than duration {s.duration}")
    quiet_from = s.duration - s.settle
    return SimConfig(
        name=s.name,
        description=s.description,
        repeat=s.repeat,
        nodes=nodes,
        out_degree=net.out_degree,
        duration=s.duration,
        settle=s.settle,
        latency=_latency(net.latency),
        upload_bps=net.upload_bps,
        download_bps=net.download_bps,
        loss=net.loss,
        tx_rate=work.tx_rate,
        tx_data_bytes=work.tx_data_bytes,
        wallets=work.wallets,
        authorities=work.authorities,
        engine=_engine(work.engine),
        hashrate=work.hashrate,
        bft_timeouts=(work.bft_timeout_propose, work.bft_timeout_vote, work.bft_timeout_commit),
        block_interval=work.block_interval,
        finality_depth=s.finality_depth,
        convergence_lag=s.convergence_lag,
        partitions=tuple(
            _partition(p, f"$.faults.partitions[{i}]", nodes, quiet_from)
            for i, p in enumerate(s.faults.partitions)
        ),
        churn=_churn(s.faults.churn, nodes, quiet_from),
        replace=_replace(s.faults.replace),
        random_faults=(
            None
            if s.faults.random is None
            else RandomFaultSpec(s.faults.random.partitions, s.faults.random.max_partition_seconds)
        ),
        discovery=net.discovery,
        bootstrap_nodes=net.bootstrap_nodes,
        block_relay_only=net.block_relay_only,
        max_inbound=net.max_inbound,
        groups=net.groups,
        target_grace=net.target_grace,
        crashes=_crashes(s.faults.crashes, nodes, quiet_from),
        adversaries=_adversaries(s.adversaries, nodes),
        relay=_relay(s.relay),
        compare_full_blocks=s.relay.compare_full_blocks,
        sync=_sync(s.sync, nodes, s.duration, work.block_interval, work.engine),
    )


SIM_ENGINES = ("poa", "pow", "bft")
# PoA's 15 s of allowed clock drift (POA_MAX_FUTURE_DRIFT_MS), in seconds.
_POA_DRIFT = 15.0


def _sync(
    spec: _Sync | None, nodes: int, duration: float, interval: float, engine: str
) -> SyncSpec | None:
    """The sync experiment: sources among the holders, a chain in the past at join time."""
    if spec is None:
        return None
    path = "$.sync"
    if engine != "poa":
        raise _InvalidError(f"{path}", "sync experiments preload a poa chain (engine = poa)")
    for i, count in enumerate(spec.sources):
        if count > nodes - 1:
            raise _InvalidError(
                f"{path}.sources[{i}]",
                f"{count} sources but only {nodes - 1} nodes hold the chain (the last joins)",
            )
    if spec.join_at >= duration:
        raise _InvalidError(f"{path}.join_at", f"join_at {spec.join_at} is not before the end")
    span = spec.blocks * interval
    if span > spec.join_at + _POA_DRIFT:
        raise _InvalidError(
            f"{path}.blocks",
            f"{spec.blocks} blocks {interval} s apart end at {span:g} s, too far past "
            f"join_at {spec.join_at} for their timestamps to be valid then",
        )
    return SyncSpec(spec.blocks, spec.txs_per_block, tuple(spec.sources), spec.join_at)


def _engine(name: str) -> str:
    if name not in SIM_ENGINES:
        raise _InvalidError(
            "$.workload.engine", f"unknown engine {name!r} (one of {', '.join(SIM_ENGINES)})"
        )
    return name


def _relay(spec: _Relay) -> RelayConfig:
    modes = {mode.value: mode for mode in RelayMode}
    mode = modes.get(spec.mode)
    if mode is None:
        raise _InvalidError(
            "$.relay.mode", f"unknown relay mode {spec.mode!r} (one of {', '.join(modes)})"
        )
    fields = msgspec.structs.asdict(spec) | {"mode": mode}
    del fields["compare_full_blocks"]  # a simulator option, not a node's
    return RelayConfig(**fields)


def _replace(spec: _Replace | None) -> ReplaceSpec | None:
    return None if spec is None else ReplaceSpec(spec.interval, spec.fraction, spec.start)


def _latency(spec: _Latency) -> LatencySpec:
    path = "$.network.latency"
    params = LATENCY_PARAMS.get(spec.model)
    if params is None:
        raise _InvalidError(
            f"{path}.model",
            f"unknown latency model {spec.model!r} (one of {', '.join(LATENCY_PARAMS)})",
        )
    for name in (n for names in LATENCY_PARAMS.values() for n in names):
        if name not in params and getattr(spec, name) is not None:
            raise _InvalidError(
                f"{path}.{name}",
                f"{name} does not apply to the {spec.model} model (its keys: {', '.join(params)})",
            )
    values = {name: getattr(spec, name) for name in params if getattr(spec, name) is not None}
    if spec.model == "uniform":
        low = values.get("low_ms", _LATENCY.low_ms)
        high = values.get("high_ms", _LATENCY.high_ms)
        if low > high:
            raise _InvalidError(f"{path}.low_ms", f"low_ms {low} is above high_ms {high}")
    if spec.model == "regions":
        regions, matrix = _regions(spec, path)
        return LatencySpec(model="regions", regions=regions, matrix_ms=matrix)
    return LatencySpec(model=spec.model, **values)


def _regions(spec: _Latency, path: str) -> tuple[tuple[str, ...], tuple[tuple[float, ...], ...]]:
    if not spec.regions:
        raise _InvalidError(f"{path}.regions", "the regions model needs a non-empty regions list")
    if spec.matrix_ms is None:
        raise _InvalidError(f"{path}.matrix_ms", "the regions model needs matrix_ms")
    regions = spec.regions
    for i, name in enumerate(regions):
        if name in regions[:i]:
            raise _InvalidError(f"{path}.regions[{i}]", f"region {name!r} is listed twice")
    size = len(regions)
    if len(spec.matrix_ms) != size:
        raise _InvalidError(
            f"{path}.matrix_ms",
            f"matrix_ms has {len(spec.matrix_ms)} rows but there are {size} regions "
            "(it must be square, one row and column per region)",
        )
    for i, row in enumerate(spec.matrix_ms):
        if len(row) != size:
            raise _InvalidError(
                f"{path}.matrix_ms[{i}]",
                f"row has {len(row)} entries but there are {size} regions (must be square)",
            )
    for i in range(size):
        for j in range(i):
            if spec.matrix_ms[i][j] != spec.matrix_ms[j][i]:
                raise _InvalidError(
                    f"{path}.matrix_ms[{i}][{j}]",
                    f"{spec.matrix_ms[i][j]} differs from matrix_ms[{j}][{i}] = "
                    f"{spec.matrix_ms[j][i]}: a link has one latency both ways, so the "
                    "matrix must be symmetric",
                )
    return tuple(regions), tuple(tuple(row) for row in spec.matrix_ms)


def _node(value: int, path: str, nodes: int) -> int:
    if not 0 <= value < nodes:
        raise _InvalidError(path, f"node {value} does not exist (nodes are 0-{nodes - 1})")
    return value


def _node_list(refs: NodeRefs, path: str, nodes: int) -> tuple[int, ...]:
    """Expand integers and "A-B" ranges, refusing unknown or repeated nodes."""
    result: list[int] = []
    seen: set[int] = set()
    for i, ref in enumerate(refs):
        where = f"{path}[{i}]"
        if isinstance(ref, int):
            expanded = [_node(ref, where, nodes)]
        else:
            match = _RANGE.match(ref)
            if match is None:
                raise _InvalidError(
                    where, f"{ref!r} is neither a node index nor a range like '0-9'"
                )
            first, last = int(match[1]), int(match[2])
            if first > last:
                raise _InvalidError(where, f"range {ref!r} is empty (first above last)")
            _node(first, where, nodes)
            _node(last, where, nodes)
            expanded = list(range(first, last + 1))
        for node in expanded:
            if node in seen:
                raise _InvalidError(where, f"node {node} is listed twice")
            seen.add(node)
        result.extend(expanded)
    if not result:
        raise _InvalidError(path, "lists no nodes")
    return tuple(result)


def _partition(p: _Partition, path: str, nodes: int, quiet_from: float) -> PartitionSpec:
    if p.start >= p.end:
        raise _InvalidError(f"{path}.end", f"end {p.end} must be after start {p.start}")
    if p.end > quiet_from:
        raise _InvalidError(
            f"{path}.end",
            f"the partition must heal by {quiet_from} (duration - settle), not {p.end}",
        )
    if not p.groups:
        raise _InvalidError(f"{path}.groups", "needs at least one group")
    groups = tuple(_node_list(g, f"{path}.groups[{i}]", nodes) for i, g in enumerate(p.groups))
    owner: dict[int, int] = {}
    for i, group in enumerate(groups):
        for node in group:
            if node in owner:
                raise _InvalidError(
                    f"{path}.groups[{i}]",
                    f"node {node} is also in groups[{owner[node]}]: groups must not overlap",
                )
            owner[node] = i
    if len(groups) == 1 and len(owner) == nodes:
        raise _InvalidError(
            f"{path}.groups",
            "one group holding every node cuts nothing (unlisted nodes form the other side)",
        )
    return PartitionSpec(p.start, p.end, groups)


def _churn(c: _Churn | None, nodes: int, quiet_from: float) -> ChurnSpec | None:
    if c is None:
        return None
    path = "$.faults.churn"
    if not 0 < c.fraction < 1:
        raise _InvalidError(f"{path}.fraction", f"fraction {c.fraction} must be between 0 and 1")
    if round(c.fraction * nodes) == 0:
        raise _InvalidError(
            f"{path}.fraction", f"fraction {c.fraction} of {nodes} nodes rounds to no node"
        )
    if c.start + c.downtime > quiet_from:
        raise _InvalidError(
            f"{path}.start",
            f"churn starting at {c.start} with downtime {c.downtime} would end after "
            f"{quiet_from} (duration - settle), so it would never run",
        )
    return ChurnSpec(c.interval, c.fraction, c.downtime, c.start)


def _crashes(crashes: list[_Crash], nodes: int, quiet_from: float) -> tuple[CrashSpec, ...]:
    down: dict[int, list[tuple[float, float]]] = {}
    result = []
    for i, c in enumerate(crashes):
        path = f"$.faults.crashes[{i}]"
        _node(c.node, f"{path}.node", nodes)
        if c.at > quiet_from:
            raise _InvalidError(
                f"{path}.at", f"crash at {c.at} is after {quiet_from} (duration - settle)"
            )
        if c.restart_at is not None:
            if c.restart_at <= c.at:
                raise _InvalidError(
                    f"{path}.restart_at", f"restart_at {c.restart_at} must be after at {c.at}"
                )
            if c.restart_at > quiet_from:
                raise _InvalidError(
                    f"{path}.restart_at",
                    f"restart at {c.restart_at} is after {quiet_from} (duration - settle)",
                )
        until = c.restart_at if c.restart_at is not None else math.inf
        for start, end in down.get(c.node, []):
            if c.at < end and start < until:
                raise _InvalidError(
                    f"{path}.at",
                    f"node {c.node} is already down from {start} until {end} "
                    "(crashes of one node must not overlap)",
                )
        down.setdefault(c.node, []).append((c.at, until))
        result.append(CrashSpec(c.node, c.at, c.restart_at))
    return tuple(result)


def _adversaries(adversaries: list[_Adversary], nodes: int) -> tuple[AdversarySpec, ...]:
    taken: dict[int, int] = {}
    result = []
    for i, a in enumerate(adversaries):
        path = f"$.adversaries[{i}]"
        if a.kind not in ADVERSARY_KINDS:
            raise _InvalidError(
                f"{path}.kind",
                f"unknown adversary kind {a.kind!r} (one of {', '.join(ADVERSARY_KINDS)})",
            )
        if a.drop_probability is not None and a.kind != "dropper":
            raise _InvalidError(
                f"{path}.drop_probability", f"applies to dropper adversaries, not {a.kind}"
            )
        members = _node_list(a.nodes, f"{path}.nodes", nodes)
        for node in members:
            if node in taken:
                raise _InvalidError(
                    f"{path}.nodes",
                    f"node {node} is already an adversary in adversaries[{taken[node]}]",
                )
            taken[node] = i
        result.append(_adversary_spec(a, path, members, nodes))
    return tuple(result)


_ECLIPSE_KEYS = (
    "victim",
    "fake_addresses",
    "attack_groups",
    "restart_at",
    "max_eclipse_probability",
)


def _adversary_spec(
    a: _Adversary, path: str, members: tuple[int, ...], nodes: int
) -> AdversarySpec:
    given = {key: getattr(a, key) for key in _ECLIPSE_KEYS if getattr(a, key) is not None}
    if a.kind != "eclipse":
        if given:
            raise _InvalidError(f"{path}.{next(iter(given))}", f"applies to eclipse, not {a.kind}")
    elif "victim" not in given:
        raise _InvalidError(f"{path}.victim", "an eclipse attack needs a victim node")
    elif not 0 <= given["victim"] < nodes or given["victim"] in members:
        raise _InvalidError(
            f"{path}.victim", f"victim {given['victim']} is not an honest node of the run"
        )
    probability = a.drop_probability
    return AdversarySpec(
        a.kind,
        members,
        probability if probability is not None else AdversarySpec.drop_probability,
        **given,
    )

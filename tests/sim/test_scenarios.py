"""Scenario files: every bad key fails before a run, with a message naming it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshchain.errors import ConfigError
from meshchain.sim.config import AdversarySpec, LatencySpec, PartitionSpec, SimConfig
from meshchain.sim.scenario import load_scenario, scenario_from_mapping

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

Mapping = dict[str, Any]


def base() -> Mapping:
    return {
        "name": "t",
        "duration": 100.0,
        "settle": 20.0,
        "network": {"nodes": 10, "out_degree": 3},
    }


def mutated(change: Callable[[Mapping], object]) -> Mapping:
    data = copy.deepcopy(base())
    change(data)
    return data


def test_minimal_scenario_takes_simconfig_defaults() -> None:
    config = scenario_from_mapping(base())
    default = SimConfig()
    assert (config.name, config.nodes, config.out_degree) == ("t", 10, 3)
    assert (config.duration, config.settle) == (100.0, 20.0)
    assert config.latency == default.latency
    assert config.tx_rate == default.tx_rate
    assert config.authorities == default.authorities
    assert config.upload_bps is None
    assert config.partitions == ()
    assert config.churn is None
    assert config.adversaries == ()


def test_full_scenario_maps_every_table() -> None:
    data = base() | {
        "finality_depth": 3,
        "network": {
            "nodes": 10,
            "out_degree": 2,
            "upload_bps": 1e6,
            "loss": 0.01,
            "latency": {
                "model": "regions",
                "regions": ["eu", "us"],
                "matrix_ms": [[10, 40], [40, 12]],
            },
        },
        "workload": {"tx_rate": 2, "wallets": 7, "authorities": 2, "block_interval": 5},
        "faults": {
            "partitions": [{"start": 10, "end": 20, "groups": [[0, "2-4"], ["5-6", 9]]}],
            "churn": {"interval": 10, "fraction": 0.2, "downtime": 3, "start": 5},
            "crashes": [{"node": 8, "at": 30, "restart_at": 40}, {"node": 8, "at": 50}],
        },
        "adversaries": [
            {"kind": "dropper", "nodes": ["7-8"], "drop_probability": 0.5},
            {"kind": "spy", "nodes": [9]},
        ],
    }
    config = scenario_from_mapping(data)
    assert config.finality_depth == 3
    assert config.latency == LatencySpec(
        model="regions", regions=("eu", "us"), matrix_ms=((10.0, 40.0), (40.0, 12.0))
    )
    assert (config.upload_bps, config.download_bps, config.loss) == (1e6, None, 0.01)
    assert (config.wallets, config.authorities, config.block_interval) == (7, 2, 5.0)
    assert config.partitions == (PartitionSpec(10.0, 20.0, ((0, 2, 3, 4), (5, 6, 9))),)
    assert config.churn is not None
    assert config.churn.fraction == 0.2
    assert [(c.node, c.at, c.restart_at) for c in config.crashes] == [
        (8, 30.0, 40.0),
        (8, 50.0, None),
    ]
    assert config.adversaries == (
        AdversarySpec("dropper", (7, 8), 0.5),
        AdversarySpec("spy", (9,), 1.0),
    )


def _set(path: str, value: object) -> Callable[[Mapping], None]:
    """A change that sets a dotted key, creating tables on the way."""

    def change(data: Mapping) -> None:
        *tables, key = path.split(".")
        for table in tables:
            data = data.setdefault(table, {})
        data[key] = value

    return change


def _partition(groups: object, start: float = 10.0, end: float = 20.0) -> object:
    return _set("faults.partitions", [{"start": start, "end": end, "groups": groups}])


REGIONS = {"model": "regions", "regions": ["a", "b"]}
BAD = [
    ("unknown top-level key", _set("nodes", 5), ["unknown field `nodes`"]),
    ("unknown nested key", _set("network.nodez", 5), ["unknown field `nodez`", "$.network"]),
    ("unknown fault key", _set("faults.storms", []), ["unknown field `storms`", "$.faults"]),
    ("missing name", lambda d: d.pop("name"), ["missing required field `name`"]),
    ("bad type", _set("network.nodes", "many"), ["Expected `int`", "$.network.nodes"]),
    ("bool is no int", _set("network.nodes", True), ["got `bool`", "$.network.nodes"]),
    ("too few nodes", _set("network.nodes", 1), [">= 2", "$.network.nodes"]),
    ("unknown relay mode", _set("relay.mode", "gossipsub"), ["gossipsub", "$.relay.mode"]),
    ("fluff over 1", _set("relay.fluff_probability", 1.5), ["<= 1", "$.relay.fluff_probability"]),
    ("unknown engine", _set("workload.engine", "pos"), ["pos", "$.workload.engine"]),
    ("payload too big", _set("workload.tx_data_bytes", 300), ["<= 256", "tx_data_bytes"]),
    (
        "out_degree equal to nodes",
        _set("network.out_degree", 10),
        ["impossible topology", "$.network.out_degree"],
    ),
    (
        "out_degree above nodes",
        _set("network.out_degree", 50),
        ["needs at least 51 nodes", "$.network.out_degree"],
    ),
    ("loss of one", _set("network.loss", 1.0), ["< 1.0", "$.network.loss"]),
    ("negative bandwidth", _set("network.upload_bps", -5), ["> 0", "$.network.upload_bps"]),
    ("infinite duration", _set("duration", float("inf")), ["$.duration"]),
    ("nan settle", _set("settle", float("nan")), ["$.settle"]),
    ("settle above duration", _set("settle", 200.0), ["longer than duration", "$.settle"]),
    ("no authorities", _set("workload.authorities", 0), [">= 1", "$.workload.authorities"]),
    (
        "more authorities than nodes",
        _set("workload.authorities", 11),
        ["11 authorities but only 10 nodes", "$.workload.authorities"],
    ),
    ("negative tx rate", _set("workload.tx_rate", -1), ["$.workload.tx_rate"]),
    (
        "unknown latency model",
        _set("network.latency", {"model": "warp"}),
        ["unknown latency model 'warp'", "$.network.latency.model"],
    ),
    (
        "latency key of another model",
        _set("network.latency", {"model": "constant", "sigma": 1.0}),
        ["sigma does not apply to the constant model", "$.network.latency.sigma"],
    ),
    (
        "uniform bounds reversed",
        _set("network.latency", {"model": "uniform", "low_ms": 90, "high_ms": 10}),
        ["above high_ms", "$.network.latency.low_ms"],
    ),
    (
        "regions without matrix",
        _set("network.latency", REGIONS),
        ["needs matrix_ms", "$.network.latency.matrix_ms"],
    ),
    (
        "regions matrix with too many rows",
        _set("network.latency", REGIONS | {"matrix_ms": [[1, 2], [2, 1], [3, 3]]}),
        ["3 rows but there are 2 regions", "$.network.latency.matrix_ms"],
    ),
    (
        "regions matrix row too short",
        _set("network.latency", REGIONS | {"matrix_ms": [[1, 2], [2]]}),
        ["must be square", "$.network.latency.matrix_ms[1]"],
    ),
    (
        "regions matrix not symmetric",
        _set("network.latency", REGIONS | {"matrix_ms": [[1, 2], [3, 1]]}),
        ["symmetric", "$.network.latency.matrix_ms[1][0]"],
    ),
    (
        "partition node out of range",
        _partition([[0, 1], [2, 10]]),
        ["node 10 does not exist", "$.faults.partitions[0].groups[1][1]"],
    ),
    (
        "partition range out of range",
        _partition([["5-12"]]),
        ["node 12 does not exist", "$.faults.partitions[0].groups[0][0]"],
    ),
    (
        "partition groups overlap",
        _partition([["0-4"], ["4-9"]]),
        ["node 4 is also in groups[0]", "$.faults.partitions[0].groups[1]"],
    ),
    (
        "partition bad range text",
        _partition([["zero-four"]]),
        ["neither a node index nor a range", "$.faults.partitions[0].groups[0][0]"],
    ),
    (
        "partition float node",
        _partition([[1.5]]),
        ["Expected `int | str`", "$.faults.partitions[0].groups[0][0]"],
    ),
    (
        "partition that cuts nothing",
        _partition([["0-9"]]),
        ["cuts nothing", "$.faults.partitions[0].groups"],
    ),
    (
        "partition ends before it starts",
        _partition([[0]], start=30, end=20),
        ["must be after start", "$.faults.partitions[0].end"],
    ),
    (
        "partition in the settle period",
        _partition([[0]], start=30, end=90),
        ["must heal by 80.0", "$.faults.partitions[0].end"],
    ),
    (
        "churn fraction of one",
        _set("faults.churn", {"interval": 10, "fraction": 1.0, "downtime": 5}),
        ["between 0 and 1", "$.faults.churn.fraction"],
    ),
    (
        "churn fraction of no node",
        _set("faults.churn", {"interval": 10, "fraction": 0.01, "downtime": 5}),
        ["rounds to no node", "$.faults.churn.fraction"],
    ),
    (
        "churn that never runs",
        _set("faults.churn", {"interval": 10, "fraction": 0.2, "downtime": 5, "start": 78}),
        ["never run", "$.faults.churn.start"],
    ),
    (
        "crash of a missing node",
        _set("faults.crashes", [{"node": 10, "at": 5}]),
        ["node 10 does not exist", "$.faults.crashes[0].node"],
    ),
    (
        "restart before crash",
        _set("faults.crashes", [{"node": 1, "at": 5, "restart_at": 5}]),
        ["must be after at", "$.faults.crashes[0].restart_at"],
    ),
    (
        "overlapping crashes",
        _set("faults.crashes", [{"node": 1, "at": 5, "restart_at": 30}, {"node": 1, "at": 20}]),
        ["already down", "$.faults.crashes[1].at"],
    ),
    (
        "unknown adversary kind",
        _set("adversaries", [{"kind": "sybil", "nodes": [1]}]),
        ["unknown adversary kind 'sybil'", "$.adversaries[0].kind"],
    ),
    (
        "adversary node out of range",
        _set("adversaries", [{"kind": "spy", "nodes": [3, 12]}]),
        ["node 12 does not exist", "$.adversaries[0].nodes[1]"],
    ),
    (
        "adversary without nodes",
        _set("adversaries", [{"kind": "spy", "nodes": []}]),
        ["lists no nodes", "$.adversaries[0].nodes"],
    ),
    (
        "drop probability on a spy",
        _set("adversaries", [{"kind": "spy", "nodes": [1], "drop_probability": 0.5}]),
        ["applies to dropper", "$.adversaries[0].drop_probability"],
    ),
    (
        "drop probability above one",
        _set("adversaries", [{"kind": "dropper", "nodes": [1], "drop_probability": 2}]),
        ["<= 1", "$.adversaries[0].drop_probability"],
    ),
    (
        "more sync sources than holders",
        _set("sync", {"blocks": 10, "sources": [1, 10]}),
        ["10 sources but only 9 nodes hold the chain", "$.sync.sources[1]"],
    ),
    (
        "sync chain in the future",
        _set("sync", {"blocks": 1_000, "join_at": 1.0}),
        ["too far past join_at", "$.sync.blocks"],
    ),
    (
        "sync on proof of work",
        lambda d: (_set("sync", {"blocks": 10})(d), _set("workload.engine", "pow")(d)),
        ["preload a poa chain", "$.sync"],
    ),
    (
        "node in two adversaries",
        _set("adversaries", [{"kind": "spy", "nodes": [1]}, {"kind": "silent", "nodes": [1]}]),
        ["already an adversary in adversaries[0]", "$.adversaries[1].nodes"],
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_bad_scenario_names_the_key_and_the_problem(
    change: Callable[[Mapping], object], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        scenario_from_mapping(mutated(change), source="bad.toml")
    message = str(caught.value)
    assert message.startswith("bad.toml: ")
    for part in expected:
        assert part in message


def test_load_scenario_prefixes_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('name = "x"\nduration = 60\n[network]\nnodes = 5\nout_degre = 2\n')
    with pytest.raises(ConfigError, match=r"typo\.toml: .*unknown field `out_degre`"):
        load_scenario(path)


def test_load_scenario_reports_toml_syntax_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\n[network\n')
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML: .*line 2"):
        load_scenario(broken)
    with pytest.raises(ConfigError, match=r"absent\.toml: no such scenario file"):
        load_scenario(tmp_path / "absent.toml")


@pytest.mark.parametrize("name", ["smoke", "scale", "propagation", "pow-partition", "sync"])
def test_shipped_scenarios_load_and_explain_themselves(name: str) -> None:
    path = SCENARIOS / f"{name}.toml"
    lines = path.read_text().splitlines()
    header = [line for line in lines[:5] if line.startswith("#")]
    assert len(header) >= 3, "a scenario starts with a comment header saying what it shows"
    config = load_scenario(path)
    assert config.name == name
    assert config.description


def test_scale_scenario_has_the_agreed_shape() -> None:
    config = load_scenario(SCENARIOS / "scale.toml")
    assert (config.nodes, config.out_degree) == (1000, 8)
    assert (config.tx_rate, config.block_interval, config.duration) == (20.0, 10.0, 600.0)


def test_propagation_scenario_has_the_agreed_shape() -> None:
    config = load_scenario(SCENARIOS / "propagation.toml")
    assert (config.nodes, config.out_degree) == (1000, 8)
    assert config.latency.model == "lognormal"
    assert config.latency.median_ms == 50.0
    assert config.compare_full_blocks
    # About 1 MB of ~430-byte transactions arrive per block interval.
    block_bytes = config.tx_rate * config.block_interval * 430
    assert 0.9e6 <= block_bytes <= 1.1e6


def test_smoke_scenario_exercises_faults() -> None:
    config = load_scenario(SCENARIOS / "smoke.toml")
    assert 40 <= config.nodes <= 60
    assert config.duration <= 300
    assert config.partitions
    assert config.partitions[0].end <= config.duration - config.settle
    assert any(crash.restart_at is not None for crash in config.crashes)
    assert config.churn is not None

"""Sync in the simulator: a fresh node catches up with upload-capped holders of a
preloaded chain, faster from four peers than from one (scenarios/sync.toml, smaller)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from meshchain.sim.config import SimConfig
from meshchain.sim.scenario import scenario_from_mapping
from meshchain.sim.syncrun import joiner, sync_report
from meshchain.sim.world import World

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "sync.toml"


def small_sync(sources: int) -> SimConfig:
    with SCENARIO.open("rb") as file:
        data = tomllib.load(file)
    data["sync"] |= {"blocks": 400, "txs_per_block": 4, "join_at": 2.0, "sources": [sources]}
    data["duration"] = 20.0
    return scenario_from_mapping(data, source="sync (small)")


def synced(config: SimConfig) -> World:
    world = World(config, 1)
    world.run()
    assert world.violations == []
    tips = {host.node.chain.tip_hash for host in world.hosts if host.node is not None}
    assert len(tips) == 1  # the joiner ends on the holders' tip
    node = world.hosts[joiner(config)].node
    assert node is not None
    assert node.chain.height == 400
    return world


def test_a_fresh_node_syncs_faster_from_four_peers_than_from_one() -> None:
    one = synced(small_sync(1))
    four = synced(small_sync(4))
    one_took, four_took = sync_report(one)["seconds"], sync_report(four)["seconds"]
    assert one_took is not None
    assert four_took is not None
    assert four_took < 0.6 * one_took
    # Every one of the four holders sent part of the bodies.
    served = [four.metrics.bytes_sent[holder]["sync_block"] for holder in range(4)]
    assert all(part > 0.1 * sum(served) for part in served), served


def test_the_scenario_file_compares_one_and_four_sources() -> None:
    with SCENARIO.open("rb") as file:
        config = scenario_from_mapping(tomllib.load(file), source=str(SCENARIO))
    assert config.sync is not None
    assert config.sync.sources == (1, 4)
    assert config.sync.blocks == 2_000
    assert config.nodes == 6  # five holders and the joiner

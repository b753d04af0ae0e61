"""Discovery in the simulator: bootstrap, replacement churn, the eclipse attack, and the
invariants that judge them. Small seeded worlds; nothing sleeps."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from meshchain.core.events import ConnectionKind
from meshchain.errors import ConfigError
from meshchain.sim.config import AdversarySpec, LatencySpec, ReplaceSpec, SimConfig
from meshchain.sim.eclipse import Eclipse, attacker_address
from meshchain.sim.peering import HonestGraphConnected, OutboundTargets, meets_targets
from meshchain.sim.repeat import run_repeated
from meshchain.sim.scenario import scenario_from_mapping
from meshchain.sim.world import World


def discovering(**overrides: Any) -> SimConfig:
    base = SimConfig(
        name="discovery",
        nodes=30,
        out_degree=4,
        block_relay_only=1,
        max_inbound=22,
        discovery=True,
        bootstrap_nodes=3,
        duration=62.0,
        settle=20.0,
        latency=LatencySpec("constant", ms=40.0),
        tx_rate=0.5,
        wallets=10,
        block_interval=5.0,
        finality_depth=3,
        target_grace=30.0,
    )
    return dataclasses.replace(base, **overrides)


def test_nodes_that_know_three_bootstrap_nodes_fill_their_slots_and_connect() -> None:
    world = World(discovering(), 1)
    world.run()
    assert world.violations == []
    report = world.report()["metrics"]["peers"]
    assert report["graph_connected"] is True
    assert report["at_outbound_targets"] == 30
    for host in world.hosts:
        assert meets_targets(host)
        assert host.node is not None
        kinds = list(host.node.peers.values())
        assert kinds.count(ConnectionKind.FULL_RELAY) == 4
        assert kinds.count(ConnectionKind.BLOCK_RELAY) == 1
        assert sum(1 for k in kinds if k is ConnectionKind.INBOUND) <= 22
        # one outbound peer per address group
        manager = host.node.peer_manager
        groups = [r.group for r in manager.peers.values() if r.outbound]
        assert len(groups) == len(set(groups))
    assert report["nodes_that_reached_targets"] == 30
    assert report["seconds_to_outbound_targets"]["max"] <= 30.0


def test_the_outbound_invariant_fails_when_targets_cannot_be_met() -> None:
    # 6 nodes cannot each find 8 full-relay peers: the invariant must say so.
    world = World(discovering(nodes=6, out_degree=8, block_relay_only=0), 1)
    world.run()
    assert any("short of its outbound targets" in v for v in world.violations)


def test_the_graph_invariant_sees_a_split() -> None:
    world = World(discovering(), 1)
    world.run()
    check = HonestGraphConnected(grace=0.0)
    assert check(world, False) == []
    for peer in sorted(world.hosts[29].connected):
        world.disconnect(29, peer, "cut for the test")
    world.hosts[29].stop()
    world.hosts[29].start()  # online, no peers yet, and settled (grace 0)
    world.sim.run(world.sim.now)  # nothing more happens: the dials are still in flight
    assert check(world, False) != []


def test_outbound_targets_record_the_time_each_node_took() -> None:
    world = World(discovering(), 2)
    targets = world.outbound_targets
    assert isinstance(targets, OutboundTargets)
    world.run()
    assert set(targets.time_to_target) == set(range(30))
    assert all(0 <= t <= 30 for t in targets.time_to_target.values())


def test_replacement_swaps_nodes_for_new_ones_and_the_network_heals() -> None:
    config = discovering(
        duration=122.0, settle=30.0, replace=ReplaceSpec(interval=30.0, fraction=0.2, start=20.0)
    )
    assert config.spare_nodes == 3 * 6  # rounds at 20, 50, 80 s: 6 nodes each
    world = World(config, 3)
    world.run()
    online = {h.index for h in world.online()}
    assert len(online) == 30
    assert {30, 47} <= online  # the first and the last spare joined
    assert world.violations == []
    assert world.report()["metrics"]["peers"]["graph_connected"] is True


def eclipse_config(**overrides: Any) -> SimConfig:
    spec = AdversarySpec(
        "eclipse",
        tuple(range(20, 36)),
        victim=5,
        fake_addresses=2_000,
        attack_groups=4,
        restart_at=150.0,
    )
    return discovering(
        nodes=36,
        duration=200.0,
        settle=20.0,
        tx_rate=0.0,
        max_inbound=12,
        target_grace=120.0,
        adversaries=(spec,),
        **overrides,
    )


def test_an_eclipse_attack_reports_the_victims_outbound_peers() -> None:
    world = World(eclipse_config(), 1)
    machines = {a.host.index for a in world.adversaries if isinstance(a, Eclipse)}
    world.run()
    outcome = world.report()["metrics"]["eclipse"]
    assert outcome["victim_online"] is True
    victim = world.hosts[5]
    assert victim.starts == 2  # it restarted
    assert victim.node is not None
    outbound = [int(p) for p, k in victim.node.peers.items() if k is not ConnectionKind.INBOUND]
    assert outcome["outbound"] == len(outbound)
    assert outcome["attacker_outbound"] == sum(1 for p in outbound if p in machines)
    # One outbound connection per group: the attacker's 4 groups bound its share.
    assert outcome["attacker_outbound"] <= 4
    # The flood reached the victim's book, and the attacker held inbound slots.
    book = victim.node.peer_manager.book
    assert any(attacker_address(i, 4) in book for i in range(2_000))
    assert world.report()["metrics"]["adversaries"]["eclipse"]["addresses_sent"] > 0


def test_repeated_runs_report_the_eclipse_probability_and_check_its_bound() -> None:
    config = dataclasses.replace(eclipse_config(), repeat=2)
    _, report = run_repeated(config, 7)
    runs = report["metrics"]["runs"]
    assert [run["seed"] for run in runs] == [7, 8]
    summary = report["metrics"]["eclipse_over_runs"]
    assert summary["runs"] == 2
    assert summary["probability"] == sum(run["eclipse"]["eclipsed"] for run in runs) / 2
    assert 0.0 <= summary["mean_attacker_share"] <= 1.0
    strict = dataclasses.replace(
        config,
        adversaries=(dataclasses.replace(config.adversaries[0], max_eclipse_probability=-1.0),),
    )
    _, failing = run_repeated(strict, 7)
    assert any("fully eclipsed" in v for v in failing["invariant_violations"])


def scenario(**network: Any) -> dict[str, Any]:
    return {"name": "t", "duration": 60.0, "network": {"nodes": 10, **network}}


def test_scenario_keys_for_discovery_are_parsed_and_checked() -> None:
    config = scenario_from_mapping(
        scenario(discovery=True, bootstrap_nodes=2, block_relay_only=1, groups=4)
    )
    assert (config.discovery, config.bootstrap_nodes, config.groups) == (True, 2, 4)
    with pytest.raises(ConfigError, match="bootstrap_nodes"):
        scenario_from_mapping(scenario(bootstrap_nodes=11))
    data = scenario()
    data["adversaries"] = [{"kind": "spy", "nodes": [1], "victim": 2}]
    with pytest.raises(ConfigError, match=r"applies to eclipse"):
        scenario_from_mapping(data)
    data["adversaries"] = [{"kind": "eclipse", "nodes": [1]}]
    with pytest.raises(ConfigError, match="needs a victim"):
        scenario_from_mapping(data)
    data["adversaries"] = [{"kind": "eclipse", "nodes": [1], "victim": 1}]
    with pytest.raises(ConfigError, match="victim"):
        scenario_from_mapping(data)


def test_one_bootstrap_address_is_enough() -> None:
    world = World(discovering(bootstrap_nodes=1), 4)
    world.run()
    assert world.violations == []
    peers = world.report()["metrics"]["peers"]
    assert peers["at_outbound_targets"] == 30
    assert peers["graph_connected"] is True

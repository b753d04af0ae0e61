"""Whole simulated networks: relay, faults, partitions, invariants and reproducibility.

Small seeded worlds (12-16 nodes, a block every 5 virtual seconds); nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from meshchain.core.chain.tx import compute_txid
from meshchain.core.events import Input, TimerFired
from meshchain.core.node import EXPIRE_TIMER, MEMPOOL_EXPIRE_INTERVAL
from meshchain.sim import network as network_module
from meshchain.sim.config import ChurnSpec, CrashSpec, LatencySpec, PartitionSpec, SimConfig
from meshchain.sim.host import SimHost
from meshchain.sim.invariants import supply_conserved
from meshchain.sim.world import World

SAFETY = ("finalized", "reverted", "balances", "another branch")


def small(**overrides: Any) -> SimConfig:
    base = SimConfig(
        name="test",
        nodes=16,
        out_degree=4,
        duration=62.0,  # not a multiple of the block interval: no block is mid-flight
        settle=20.0,
        latency=LatencySpec("constant", ms=50.0),
        tx_rate=1.0,
        wallets=20,
        block_interval=5.0,
        finality_depth=3,
    )
    return dataclasses.replace(base, **overrides)


def run(config: SimConfig, seed: int = 1) -> World:
    world = World(config, seed)
    world.run()
    return world


def height(world: World, node: int) -> int:
    chain = world.hosts[node].node
    assert chain is not None
    return chain.chain.height


def tips(world: World, nodes: range | list[int]) -> set[bytes]:
    return {host.node.chain.tip_hash for i in nodes if (host := world.hosts[i]).node}


def probe(world: World, at: float, read: Any) -> list[Any]:
    """Read something from the world at a virtual time, before the run starts."""
    seen: list[Any] = []
    world.sim.at(at, lambda: seen.append(read()))
    return seen


def known_txids(host: SimHost) -> set[bytes]:
    """Transactions a host has: in its mempool or in a block of its main chain."""
    assert host.node is not None
    chain = host.node.chain
    known = {vtx.txid for vtx in host.node.mempool}
    for height in range(1, chain.height + 1):
        block_hash = chain.hash_at(height)
        block = chain.block(block_hash) if block_hash is not None else None
        assert block is not None
        known.update(compute_txid(tx.body) for tx in block.transactions)
    return known


def test_every_transaction_reaches_every_honest_node() -> None:
    world = run(small())
    txids = list(world.metrics.tx_origin)
    assert len(txids) >= 20
    for host in world.hosts:
        known = known_txids(host)
        missing = [txid for txid in txids if txid not in known]
        assert missing == [], f"node {host.index} never got {len(missing)} transactions"
    assert len(tips(world, range(16))) == 1
    assert world.violations == []
    assert world.network.stats.dropped_offline == 0


def test_a_restarted_node_resumes_from_its_store_and_follows_new_blocks() -> None:
    # Down from 11 s to 13 s: blocks come at 5, 10, 15, ... so it misses none.
    world = World(small(crashes=(CrashSpec(10, at=11.0, restart_at=13.0),)), 1)
    before = probe(world, 10.99, lambda: height(world, 10))
    down = probe(world, 12.0, lambda: world.hosts[10].online)
    after = probe(world, 13.001, lambda: height(world, 10))
    world.run()
    assert before == [2]
    assert down == [False]
    assert after[0] >= before[0]  # the stored chain, not genesis
    assert height(world, 10) >= 10
    assert world.hosts[10].starts == 2
    assert world.hosts[10].connected
    assert len(tips(world, range(16))) == 1
    assert world.violations == []


def test_a_node_that_slept_through_blocks_catches_up_from_its_peers() -> None:
    # Down from 11 s to 27 s: it misses blocks 3, 4 and 5. On reconnecting, its peers'
    # hellos show it is behind: it syncs headers first, then the missing blocks.
    world = World(small(crashes=(CrashSpec(10, at=11.0, restart_at=27.0),)), 1)
    after = probe(world, 27.001, lambda: height(world, 10))
    caught_up = probe(world, 29.0, lambda: height(world, 10))
    world.run()
    assert after == [2]
    assert caught_up == [5]
    assert world.metrics.messages["sync_request"] >= 2  # GetHeaders, then GetBlocks
    assert world.metrics.messages["sync_block"] >= 2
    assert len(tips(world, range(16))) == 1
    assert world.violations == []


def test_a_chain_that_stops_growing_is_reported() -> None:
    # Authority 1 owns heights 1, 5, 9, ...: without it nobody may make height 5.
    world = run(small(crashes=(CrashSpec(1, at=12.0),)))
    assert height(world, 0) == 4
    assert len(tips(world, [h for h in range(16) if h != 1])) == 1
    assert world.violations == [
        "t=62.000: no block from t=40 to the end: the best honest chain stalled at height 4"
    ]


def test_a_restarted_process_does_not_get_its_predecessors_timers() -> None:
    world = World(small(nodes=4, duration=70.0, tx_rate=0.0, crashes=(CrashSpec(3, 7.0, 7.5),)), 1)
    host = world.hosts[3]
    fired: list[float] = []
    feed = host.feed

    def spy(event: Input) -> None:
        if event == TimerFired(EXPIRE_TIMER):
            fired.append(world.sim.now)
        feed(event)

    host.feed = spy  # type: ignore[method-assign]
    world.run()
    assert fired == [pytest.approx(7.5 + MEMPOOL_EXPIRE_INTERVAL)]  # not at 60 s as well


def test_churn_keeps_every_invariant_and_links_come_back() -> None:
    world = run(small(duration=92.0, settle=40.0, churn=ChurnSpec(10.0, 0.2, 6.0, start=8.0)))
    assert sum(host.starts > 1 for host in world.hosts) >= 5
    assert world.violations == []
    assert len(tips(world, range(16))) == 1
    for host in world.hosts:
        assert host.online
        assert host.connected == world.neighbours(host.index), f"node {host.index} lost links"


def test_a_closed_session_is_redialled_by_the_side_that_dialled() -> None:
    world = World(small(tx_rate=0.0), 1)
    dialler = world.hosts[5]
    peer = world.topology[5][0]
    world.sim.at(20.0, world.disconnect, 5, peer, "sent an invalid block")
    during = probe(world, 20.2, lambda: peer in dialler.connected)
    world.run()
    assert during == [False]
    assert peer in dialler.connected
    assert 5 in world.hosts[peer].connected


def test_a_healed_partition_lets_the_held_blocks_through_and_the_network_converges() -> None:
    # Two authorities on each side: neither can extend the chain alone for long.
    sides = ((0, 1, *range(4, 10)), (2, 3, *range(10, 16)))
    world = World(small(duration=82.0, partitions=(PartitionSpec(12.0, 35.0, sides),)), 1)
    split = probe(world, 34.9, lambda: len(tips(world, range(16))))
    world.run()
    assert split[0] > 1  # the sides really disagreed before the heal
    assert world.network.stats.held_partition > 0
    assert world.network.stats.dropped_partition == 0
    assert len(tips(world, range(16))) == 1
    assert height(world, 0) >= 10
    assert world.violations == []


def test_a_partition_outlasting_tcp_closes_links_which_are_redialled_after_the_heal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(network_module, "TCP_GIVE_UP", 10.0)
    sides = ((0, 1, *range(4, 10)), (2, 3, *range(10, 16)))
    world = World(small(duration=92.0, partitions=(PartitionSpec(12.0, 40.0, sides),)), 1)
    across = probe(
        world,
        30.0,
        lambda: sum(
            1 for h in world.hosts for p in h.connected if (h.index in sides[0]) != (p in sides[0])
        ),
    )
    world.run()
    assert across == [0]  # TCP gave up at 22 s: no session spans the cut
    for host in world.hosts:
        assert host.connected == world.neighbours(host.index)
    # What was in flight when TCP gave up is lost; the new sessions exchange tips instead.
    assert world.network.stats.dropped_partition > 0
    assert len(tips(world, range(16))) == 1
    assert height(world, 0) >= 12
    assert world.violations == []


def test_supply_is_conserved_and_a_broken_ledger_is_caught() -> None:
    world = run(small())
    assert world.violations == []
    host = world.hosts[7]
    assert host.node is not None
    ledger = host.node.chain.ledger
    assert ledger.minted > 0  # blocks paid rewards, transactions paid fees
    assert ledger.total_balance() == ledger.expected_supply()
    ledger.minted += 1
    assert supply_conserved(world, True) == [
        f"node 7: balances {ledger.total_balance()} != supply {ledger.expected_supply()}"
    ]


def test_a_violated_invariant_is_reported_with_its_time() -> None:
    world = World(small(duration=30.0, settle=10.0), 1)
    world.invariants.append(lambda w, final: ["always broken"] if final else ["broken now"])
    world.run()
    assert world.report()["invariant_violations"] == [
        "t=10.000: broken now",
        "t=20.000: broken now",
        "t=30.000: broken now",
        "t=30.000: always broken",
    ]


def test_a_seed_fixes_the_report_and_another_seed_changes_it() -> None:
    def report(seed: int) -> str:
        return json.dumps(run(small(duration=40.0), seed).report(), sort_keys=True)

    first = report(3)
    assert report(3) == first
    assert report(4) != first
    assert json.loads(first)["metrics"]["adversaries"] == {}


def test_hosts_share_one_copy_of_each_stored_block() -> None:
    world = World(
        SimConfig(
            name="share",
            nodes=6,
            out_degree=2,
            duration=25.0,
            settle=5.0,
            tx_rate=2.0,
            wallets=10,
            authorities=2,
            block_interval=5.0,
        ),
        4,
    )
    world.run()
    chains = [host.node.chain for host in world.hosts if host.node is not None]
    assert len(chains) == 6
    shared_height = min(chain.height for chain in chains)
    assert shared_height >= 2
    tip = chains[0].hash_at(shared_height)
    assert tip is not None
    assert all(chain.hash_at(shared_height) == tip for chain in chains)
    copies = {id(host.store.get_block(tip)) for host in world.hosts}
    assert len(copies) == 1  # every store holds the very same bytes object
    assert world.block_pool[tip] is world.hosts[0].store.get_block(tip)

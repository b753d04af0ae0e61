"""BFT consensus in the simulator: a crashed validator, an equivocating one, a partition
without a quorum, and safety plus liveness over 1,000 random seeds for f = 1 and f = 2."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from meshchain.core.consensus.bft import BftEngine
from meshchain.sim.bft import Equivocator
from meshchain.sim.scenario import load_scenario
from meshchain.sim.world import World

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
RANDOM_SEEDS = 1_000


def heights_at(world: World, times: list[float]) -> list[int]:
    """The best honest height at each of `times` (running the world up to each)."""
    found = []
    world.start()
    for when in times:
        world.sim.run(when)
        found.append(max(h.node.chain.height for h in world.honest_online() if h.node))
    return found


def finish(world: World) -> None:
    world.sim.run(world.config.duration)
    world._check(final=True)


def test_commits_go_on_while_one_of_four_validators_is_down() -> None:
    world = World(load_scenario(SCENARIOS / "bft-crash.toml"), 1)
    down, back = heights_at(world, [31.0, 89.0])
    assert back >= down + 10  # 3 of 4 validators keep committing
    finish(world)
    assert world.violations == []
    restarted = world.hosts[2].node
    leader = max(h.node.chain.height for h in world.honest_online() if h.node)
    assert restarted is not None
    assert restarted.chain.height >= leader - 1  # caught up from its peers' commits


def test_an_equivocating_validator_is_recorded_and_commits_never_conflict() -> None:
    world = World(load_scenario(SCENARIOS / "bft-byzantine.toml"), 1)
    world.run()
    assert world.violations == []  # includes no conflicting commits, evidence committed
    cheat = next(a for a in world.adversaries if isinstance(a, Equivocator))
    assert cheat.equivocations > 10
    node = world.hosts[0].node
    assert node is not None
    engine = BftEngine(world.genesis)
    chain = node.chain
    evidence = [
        e
        for h in range(1, chain.height + 1)
        for e in engine.seal_of(chain.header(chain.hash_at(h) or b"")).evidence  # type: ignore[arg-type]
    ]
    assert {e.first.validator for e in evidence} == {cheat.index}


def test_a_partition_without_a_quorum_halts_the_chain_then_it_resumes() -> None:
    world = World(load_scenario(SCENARIOS / "bft-partition.toml"), 1)
    cut, during, healed = heights_at(world, [31.0, 89.0, 149.0])
    assert during <= cut + 1  # halted, not forked (HaltsWithoutQuorum checks it too)
    assert healed >= during + 3  # resumed after the heal
    finish(world)
    assert world.violations == []


def _violations(args: tuple[str, int]) -> tuple[int, list[str]]:
    path, seed = args
    world = World(load_scenario(path), seed)
    world.run()
    return seed, world.violations


@pytest.mark.parametrize("scenario", ["bft-random.toml", "bft-random-f2.toml"])
def test_random_delays_drops_and_partitions_never_break_safety_or_liveness(
    scenario: str,
) -> None:
    """1,000 seeds each: no conflicting commits, no stall once the network heals, one tip."""
    path = str(SCENARIOS / scenario)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        runs = list(
            pool.map(_violations, [(path, s) for s in range(1, RANDOM_SEEDS + 1)], chunksize=50)
        )
    failed = [(seed, problems[:3]) for seed, problems in runs if problems]
    assert len(runs) == RANDOM_SEEDS
    assert failed == []

"""Time the simulator on scenarios/scale.toml; compare with the bare event heap.

The baseline, measured in the same run, is the engine alone: `Simulator` processing
no-op events that each schedule the next (as network deliveries and timers do), with as
many events pending as the full run tends to have. Its events per second are the ceiling
the full simulation could reach if nodes, codecs and the network model cost nothing.

    python bench/sim_scale.py [--scenario scenarios/scale.toml] [--duration SECONDS]

`--duration N` runs only the first N virtual seconds of the scenario (the same run as the
full one up to N: the settle period still starts where the scenario puts it).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import resource
import sys
import time
from pathlib import Path

from meshchain.sim.config import SimConfig
from meshchain.sim.engine import Simulator
from meshchain.sim.scenario import load_scenario
from meshchain.sim.world import World

TARGET_EVENTS_PER_SECOND = 100_000
SCALE = Path(__file__).resolve().parent.parent / "scenarios" / "scale.toml"
BASELINE_EVENTS = 2_000_000
BASELINE_PENDING = 20_000


def engine_baseline(events: int, pending: int) -> float:
    """Events per second of the bare heap: no-op callbacks that reschedule themselves."""
    sim = Simulator(0)
    delays = [random.Random(0).expovariate(10.0) for _ in range(4096)]
    counter = [0]

    def tick() -> None:
        counter[0] += 1
        sim.after(delays[counter[0] & 4095], tick)

    for index in range(pending):
        sim.at(delays[index & 4095], tick)
    started = time.perf_counter()
    sim.run(float("inf"), max_events=events)
    return events / (time.perf_counter() - started)


def truncated(config: SimConfig, duration: float | None) -> SimConfig:
    """The scenario cut at `duration`, its settle period still starting where it did."""
    if duration is None or duration >= config.duration:
        return config
    quiet_from = config.duration - config.settle
    return dataclasses.replace(config, duration=duration, settle=max(0.0, duration - quiet_from))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=SCALE)
    parser.add_argument("--duration", type=float, default=None, help="virtual seconds to run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-events", type=int, default=BASELINE_EVENTS)
    args = parser.parse_args()

    baseline = engine_baseline(args.baseline_events, BASELINE_PENDING)
    print(f"engine baseline (bare heap, {BASELINE_PENDING:,} pending): {baseline:,.0f} events/s")

    config = truncated(load_scenario(args.scenario), args.duration)
    started = time.perf_counter()
    world = World(config, args.seed)
    built = time.perf_counter() - started
    print(f"scenario {config.name}: {config.nodes:,} nodes built in {built:.1f} s", flush=True)

    started = time.perf_counter()
    report_every = max(1.0, config.duration / 20)
    next_report = [report_every]

    def progress(now: float) -> None:
        if now >= next_report[0]:
            next_report[0] += report_every
            wall = time.perf_counter() - started
            print(
                f"  t={now:6.0f} virtual s  {wall:8.1f} wall s  "
                f"{world.sim.events_processed / wall:,.0f} events/s",
                file=sys.stderr,
                flush=True,
            )

    world.run(progress=progress)
    wall = time.perf_counter() - started
    events = world.sim.events_processed
    rate = events / wall
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"virtual seconds:          {config.duration:g}")
    print(f"events:                   {events:,}")
    print(f"wall seconds (run):       {wall:.1f}")
    print(f"events per second:        {rate:,.0f}")
    print(f"wall s per virtual s:     {wall / config.duration:.3f}")
    print(
        f"vs target {TARGET_EVENTS_PER_SECOND:,}/s:     {rate / TARGET_EVENTS_PER_SECOND:.2f}x"
        f" ({'met' if rate >= TARGET_EVENTS_PER_SECOND else 'missed'})"
    )
    print(f"vs engine baseline:       {rate / baseline:.3f}x")
    print(f"peak memory:              {peak_mib:,.0f} MiB")
    print(f"invariant violations:     {len(world.violations)}")


if __name__ == "__main__":
    main()

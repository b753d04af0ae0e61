"""Many runs of one scenario, one report: for claims about probabilities across seeds.

A scenario with `repeat = N` runs with seeds seed .. seed + N - 1. The report is the
first run's (its plots too), plus `metrics.runs` (one line per run) and, for an eclipse
attack, `metrics.eclipse_over_runs`: how often the victim ended fully eclipsed and the
attacker's mean share of its outbound slots. Every run's invariant violations are kept,
prefixed with its seed, and a probability above the scenario's bound is one more.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from meshchain.sim.config import SimConfig
from meshchain.sim.world import World


def run_repeated(
    config: SimConfig, seed: int, after_run: Callable[[int], None] | None = None
) -> tuple[World, dict[str, Any]]:
    """Run every seed; return the first run's world (for plots) and the combined report."""
    first: tuple[World, dict[str, Any]] | None = None
    runs: list[dict[str, Any]] = []
    violations: list[str] = []
    for offset in range(config.repeat):
        world = World(config, seed + offset)
        world.run()
        report = world.report()
        if first is None:
            first = (world, copy.deepcopy(report))
        outcome = report["metrics"].get("eclipse")
        runs.append(
            {
                "seed": seed + offset,
                "invariant_violations": len(report["invariant_violations"]),
                **({"eclipse": outcome} if outcome is not None else {}),
            }
        )
        violations += [f"seed {seed + offset}: {v}" for v in report["invariant_violations"]]
        if after_run is not None:
            after_run(offset + 1)
    assert first is not None
    world, combined = first
    combined["metrics"]["runs"] = runs
    eclipse = _eclipse_over_runs(runs)
    if eclipse is not None:
        combined["metrics"]["eclipse_over_runs"] = eclipse
        bound = _eclipse_bound(config)
        if eclipse["probability"] > bound:
            violations.append(
                f"the victim was fully eclipsed in {eclipse['eclipsed']} of {eclipse['runs']} "
                f"runs: probability {eclipse['probability']} > {bound}"
            )
    combined["invariant_violations"] = violations
    return world, combined


def _eclipse_over_runs(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    outcomes = [run["eclipse"] for run in runs if run.get("eclipse")]
    if not outcomes:
        return None
    shares = [o["attacker_share"] for o in outcomes if o.get("attacker_share") is not None]
    eclipsed = sum(1 for o in outcomes if o.get("eclipsed"))
    return {
        "runs": len(outcomes),
        "eclipsed": eclipsed,
        "probability": round(eclipsed / len(outcomes), 6),
        "mean_attacker_share": round(sum(shares) / len(shares), 6) if shares else None,
        "max_attacker_share": max(shares, default=None),
    }


def _eclipse_bound(config: SimConfig) -> float:
    bounds = [a.max_eclipse_probability for a in config.adversaries if a.kind == "eclipse"]
    return min(bounds, default=1.0)

"""`meshchain sim run`: a scenario file in, report.json and plots out.

Exit status: 0 when every invariant held, 1 when one was violated (they are printed),
2 when the scenario is unusable (the message names the key), 130 on Ctrl-C.

`meshchain sim privacy`: the Dandelion++ paper's first-spy experiment (`sim/privacy.py`);
JSON on stdout, progress on stderr.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from meshchain.errors import ConfigError

if TYPE_CHECKING:
    from meshchain.sim.config import SimConfig
    from meshchain.sim.world import World

EXIT_VIOLATION = 1
EXIT_BAD_SCENARIO = 2
EXIT_INTERRUPTED = 130


class _SpeedColumn(ProgressColumn):
    """Virtual seconds simulated per wall second: how far ahead of real time the run is."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed
        if not elapsed or not task.completed:
            return Text("-- x real time", style="progress.data.speed")
        return Text(f"{task.completed / elapsed:,.1f}x real time", style="progress.data.speed")


@click.group()
def sim() -> None:
    """The deterministic network simulator."""


@sim.command("run")
@click.argument("scenario", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--seed", type=int, default=1, show_default=True, help="Run seed.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("sim-out"),
    show_default=True,
    help="Directory for report.json and the plots.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(scenario: Path, seed: int, out_dir: Path, quiet: bool) -> None:
    """Run SCENARIO (a TOML file) and write OUT/report.json and PNG plots.

    The same scenario and seed always give a byte-identical report.json.
    """
    from meshchain.sim.scenario import load_scenario
    from meshchain.sim.world import World

    stderr = Console(stderr=True)
    try:
        config = load_scenario(scenario)
        if not quiet:
            stderr.print(f"building {config.nodes} nodes for scenario {config.name!r}...")
        world = World(config, seed)
    except ConfigError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(EXIT_BAD_SCENARIO)

    started = time.perf_counter()
    if config.repeat > 1:
        world, report = _run_repeated(config, seed, quiet, stderr)
        _finish(world, report, out_dir, time.perf_counter() - started)
        return
    try:
        if quiet:
            world.run()
        else:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} virtual s"),
                TimeElapsedColumn(),
                _SpeedColumn(),
                console=stderr,
            ) as progress:
                task = progress.add_task(config.name, total=config.duration)
                world.run(progress=lambda now: progress.update(task, completed=now))
    except KeyboardInterrupt:
        click.echo("interrupted; no report written", err=True)
        sys.exit(EXIT_INTERRUPTED)
    report = world.report()
    if config.compare_full_blocks:
        report["metrics"]["block_relay_comparison"] = _compare_full_blocks(
            world, config, seed, quiet, stderr
        )
    if config.sync is not None and len(config.sync.sources) > 1:
        from meshchain.sim.syncrun import sync_comparison

        if not quiet:
            stderr.print("running again with the joiner's other numbers of sources...")
        report["metrics"]["sync"] = sync_comparison(world, config, seed)
        violations = report["invariant_violations"]
        for run in report["metrics"]["sync"].values():
            violations += [f"{problem} (sync run)" for problem in run.pop("violations", [])]
    _finish(world, report, out_dir, time.perf_counter() - started)


def _compare_full_blocks(
    world: World, config: SimConfig, seed: int, quiet: bool, stderr: Console
) -> dict[str, Any]:
    """The same run with compact blocks off: what they save, in bytes and in time."""
    from meshchain.sim.propagation import block_relay_summary
    from meshchain.sim.world import World

    if not quiet:
        stderr.print("running again with compact blocks off, for the comparison...")
    relay = dataclasses.replace(config.relay, compact_blocks=False)
    full = World(dataclasses.replace(config, relay=relay, compare_full_blocks=False), seed)
    full.run()
    return {"compact": block_relay_summary(world), "full": block_relay_summary(full)}


def _run_repeated(
    config: SimConfig, seed: int, quiet: bool, stderr: Console
) -> tuple[World, dict[str, Any]]:
    from meshchain.sim.repeat import run_repeated

    try:
        if quiet:
            return run_repeated(config, seed)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} runs"),
            TimeElapsedColumn(),
            console=stderr,
        ) as progress:
            task = progress.add_task(config.name, total=config.repeat)
            return run_repeated(config, seed, lambda done: progress.update(task, completed=done))
    except KeyboardInterrupt:
        click.echo("interrupted; no report written", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _finish(world: World, report: dict[str, Any], out_dir: Path, wall: float) -> None:
    from meshchain.sim.report import PLOT_FILES, write_report

    path = write_report(world, out_dir, report=report)
    _summary(report, wall)
    click.echo(f"report: {path}")
    for name in PLOT_FILES:
        if (out_dir / name).exists():
            click.echo(f"plot:   {out_dir / name}")
    violations: list[str] = report["invariant_violations"]
    if violations:
        click.echo(f"{len(violations)} invariant violation(s):", err=True)
        for violation in violations:
            click.echo(f"  {violation}", err=True)
        sys.exit(EXIT_VIOLATION)


def _summary(report: dict[str, Any], wall: float) -> None:
    metrics = report["metrics"]
    propagation = metrics["propagation_seconds"]
    events = metrics["simulator"]["events"]
    virtual = metrics["simulator"]["virtual_seconds"]
    scenario = report["scenario"]

    def spread(key: str) -> str:
        p = propagation[key]
        if not p["count"]:
            return "no samples"
        return f"p50 {p['p50']:.3f}s  p95 {p['p95']:.3f}s  max {p['max']:.3f}s"

    chain = metrics["chain"]
    rate = "" if "runs" in metrics else f", {events / max(wall, 1e-9):,.0f} events/s"
    click.echo(
        f"scenario {scenario['name']} seed {report['seed']}: {scenario['nodes']} nodes, "
        f"{virtual:g} virtual s in {wall:.1f} wall s ({events:,} events{rate})"
    )
    click.echo(
        f"  transactions {metrics['transactions_submitted']:,}, blocks "
        f"{metrics['blocks_produced']:,}, heights {chain['height_min']}-{chain['height_max']}, "
        f"reorganizations {metrics['reorganizations']}"
    )
    click.echo(f"  transaction propagation: {spread('transaction')}")
    click.echo(f"  block propagation:       {spread('block')}")
    for name, run in metrics.get("sync", {}).items():
        took = "did not finish" if run["seconds"] is None else f"{run['seconds']:.2f} s"
        click.echo(
            f"  sync {name.replace('_', ' ')}: {run['blocks']:,} blocks in {took} "
            f"({run['blocks_per_second'] or 0:,.0f} blocks/s)"
        )
    runs = metrics.get("runs")
    if runs is not None:
        click.echo(
            f"  runs: {len(runs)} (seeds {runs[0]['seed']}-{runs[-1]['seed']}); "
            "the lines above are the first run's"
        )
        eclipse = metrics.get("eclipse_over_runs")
        if eclipse is not None:
            click.echo(
                f"  eclipse: victim fully eclipsed in {eclipse['eclipsed']} of "
                f"{eclipse['runs']} runs, attacker's mean share of its outbound slots "
                f"{eclipse['mean_attacker_share']}"
            )
    click.echo(f"  invariant violations:    {len(report['invariant_violations'])}")


@sim.command("privacy")
@click.option("--nodes", type=click.IntRange(min=3), default=100, show_default=True)
@click.option(
    "--out-degree",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Outbound connections per node (2: a 4-regular graph).",
)
@click.option(
    "--spy-fraction",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of the nodes that are spies (floor(fraction * nodes) of them).",
)
@click.option(
    # the names of privacy.ROUTINGS; importing it here would load the simulator at startup
    "--routing",
    type=click.Choice(["diffusion", "dandelion"]),
    default="dandelion",
    show_default=True,
    help="diffusion: trickled announcements; dandelion: Dandelion++ stems, then that.",
)
@click.option(
    "--fluff-probability",
    type=click.FloatRange(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Dandelion++'s q: the chance a node is a diffuser in an epoch.",
)
@click.option(
    "--graphs", type=click.IntRange(min=1), default=10, show_default=True, help="Random graphs."
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Runs per graph (new seeds: timers, diffusers, stem routes).",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def privacy(
    nodes: int,
    out_degree: int,
    spy_fraction: float,
    routing: str,
    fluff_probability: float,
    graphs: int,
    trials: int,
    seed: int,
    quiet: bool,
) -> None:
    """Precision and recall of the first-spy estimator, as in the Dandelion++ paper.

    Every honest node sends one transaction on a random regular graph of real nodes; the
    spies attribute each to the peer they first heard it from. Prints JSON on stdout;
    the same options and seed always print the same JSON.
    """
    from meshchain.sim.privacy import PrivacyConfig, run_experiment

    try:
        config = PrivacyConfig(
            nodes=nodes,
            out_degree=out_degree,
            spy_fraction=spy_fraction,
            routing=routing,
            fluff_probability=fluff_probability,
            graphs=graphs,
            trials=trials,
            seed=seed,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    try:
        report = run_experiment(config, None if quiet else lambda line: click.echo(line, err=True))
    except KeyboardInterrupt:
        click.echo("interrupted; no report", err=True)
        sys.exit(EXIT_INTERRUPTED)
    click.echo(json.dumps(report, indent=2, sort_keys=True))

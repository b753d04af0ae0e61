"""A run's outputs: `report.json`, byte-identical for a scenario and seed, and PNG plots.

The JSON holds only what the run computed in virtual time (no wall clock, no paths, keys
sorted), so two runs of one scenario and seed can be compared with `cmp`. The plots are
for people and may differ in metadata; matplotlib is optional (the `sim` extra) and is
imported only here, on the non-interactive Agg canvas, without touching pyplot's state.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from meshchain.sim.world import World

REPORT_FILE = "report.json"
PROPAGATION_PLOT = "propagation_cdf.png"
BANDWIDTH_PLOT = "bandwidth_per_node.png"
PLOT_FILES = (PROPAGATION_PLOT, BANDWIDTH_PLOT)
CDF_POINTS = 1001  # quantiles drawn per curve: a 1,000-node run has millions of samples
DPI = 110


def report_json(report: dict[str, Any]) -> str:
    """The canonical text of a report: sorted keys, fixed indentation, final newline."""
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def write_report(
    world: World,
    out_dir: str | Path,
    *,
    report: dict[str, Any] | None = None,
    plots: bool = True,
) -> Path:
    """Write report.json (and the plots unless told not to) into `out_dir`; return its path.

    Pass `report` when the caller already has `world.report()`: on a large run computing
    it sorts millions of samples.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    if report is None:
        report = world.report()
    path.write_bytes(report_json(report).encode("utf-8"))
    for name in PLOT_FILES:  # never leave an older run's plots beside this report
        (out / name).unlink(missing_ok=True)
    if plots:
        write_plots(world, out)
    return path


def write_plots(world: World, out_dir: Path) -> list[Path]:
    """Render the PNGs; without matplotlib, say so on one stderr line and render nothing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print(
            "warning: matplotlib is not installed, skipping plots (pip install 'meshchain[sim]')",
            file=sys.stderr,
        )
        return []
    title = f"{world.config.name}, seed {world.seed}, {world.config.nodes} nodes"
    written = []

    figure = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(figure)
    _propagation(figure.add_subplot(), world, title)
    written.append(out_dir / PROPAGATION_PLOT)
    figure.savefig(written[-1], dpi=DPI)

    figure = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(figure)
    sent, received = figure.subplots(2, 1, sharex=True)
    _bandwidth(sent, world.metrics.bytes_sent, "sent")
    _bandwidth(received, world.metrics.bytes_received, "received")
    sent.set_title(f"Bytes per node by message kind ({title})")
    received.set_xlabel("nodes, sorted by total bytes (most first)")
    written.append(out_dir / BANDWIDTH_PLOT)
    figure.savefig(written[-1], dpi=DPI)
    return written


def _propagation(axes: Axes, world: World, title: str) -> None:
    import numpy as np

    metrics = world.metrics
    curves = (
        ("transaction, each node", metrics.tx_delays, "tab:blue", "-"),
        ("transaction, all nodes", metrics.tx_full, "tab:blue", ":"),
        ("block, each node", metrics.block_delays, "tab:orange", "-"),
        ("block, all nodes", metrics.block_full, "tab:orange", ":"),
    )
    levels = np.linspace(0.0, 1.0, CDF_POINTS)
    drawn = 0
    for label, samples, colour, style in curves:
        if not samples:
            continue
        values = np.quantile(np.asarray(samples, dtype=float), levels)
        axes.step(
            values,
            levels,
            where="post",
            color=colour,
            linestyle=style,
            label=f"{label} (n={len(samples):,})",
        )
        drawn += 1
    if drawn == 0:
        axes.text(0.5, 0.5, "no propagation samples", ha="center", transform=axes.transAxes)
    else:
        axes.legend(loc="lower right")
    # Most deliveries take tenths of a second, the tail (partitions, queues) many seconds.
    axes.set_xscale("symlog", linthresh=0.01, linscale=0.5)
    axes.set_xlim(left=0)
    axes.set_xlabel(
        "seconds after the transaction was submitted / the block was made (log above 10 ms)"
    )
    axes.set_ylabel("fraction of deliveries")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title(f"Propagation delay CDF ({title})")


def _bandwidth(axes: Axes, table: Sequence[dict[str, int]], direction: str) -> None:
    import numpy as np

    kinds = sorted({kind for row in table for kind in row})
    counts = np.array([[row.get(kind, 0) for kind in kinds] for row in table], dtype=float)
    if counts.size == 0:
        axes.text(0.5, 0.5, "no traffic", ha="center", transform=axes.transAxes)
        return
    order = np.argsort(-counts.sum(axis=1), kind="stable")
    counts = counts[order] / 1e6
    positions = np.arange(len(table))
    bottom = np.zeros(len(table))
    for column, kind in enumerate(kinds):
        axes.bar(positions, counts[:, column], width=1.0, bottom=bottom, label=kind, linewidth=0)
        bottom += counts[:, column]
    axes.set_ylabel(f"MB {direction}")
    axes.set_xlim(-0.5, len(table) - 0.5)
    axes.legend(loc="upper right")
    axes.grid(axis="y", alpha=0.3)

"""`meshchain node` on a terminal: a progress bar while the node syncs.

The node reports `SyncProgress` at most once a second and `SyncFinished` at the end; the
bar shows height out of target, blocks a second and the time left. Off a terminal the
driver logs the same figures as lines instead (`NodeDriver.log_sync_progress`).
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from meshchain.core.events import Action, SyncFinished, SyncProgress


class SyncBar:
    """A driver observer drawing sync progress on `console` (stderr, a terminal)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, action: Action) -> None:
        if isinstance(action, SyncProgress):
            self._show(action)
        elif isinstance(action, SyncFinished):
            self.close()

    def _show(self, report: SyncProgress) -> None:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]sync"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} blocks"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[eta]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "sync", total=report.target_height, rate="", eta=""
            )
        assert self._task is not None
        eta = "" if report.eta_seconds is None else f"~{report.eta_seconds:,.0f} s left"
        self._progress.update(
            self._task,
            completed=report.height,
            total=report.target_height,
            rate=f"{report.blocks_per_second:,.0f} blocks/s",
            eta=eta,
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


def terminal_logging(level: str, console: Console) -> None:
    """Log through rich on the bar's console, so log lines scroll above the bar."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )

"""`meshchain node`'s sync progress bar: what a terminal shows for the node's notices."""

from __future__ import annotations

import io

from rich.console import Console

from meshchain.cli.progress import SyncBar
from meshchain.core.events import BlockAccepted, SyncFinished, SyncProgress


def test_the_bar_shows_height_rate_and_time_left_then_goes_away() -> None:
    screen = io.StringIO()
    bar = SyncBar(Console(file=screen, force_terminal=True, width=120))
    bar(BlockAccepted(bytes(32), 1, 0, produced=False))  # not its business
    assert screen.getvalue() == ""
    bar(SyncProgress(1_200, 5_000, 400.0, 9.5))
    bar(SyncProgress(2_000, 5_000, 410.0, 7.3))
    bar(SyncFinished(5_000, 5_000, 12.0))
    shown = screen.getvalue()
    assert "2,000/5,000 blocks" in shown
    assert "410 blocks/s" in shown
    assert "~7 s left" in shown
    bar.close()  # closing again is harmless

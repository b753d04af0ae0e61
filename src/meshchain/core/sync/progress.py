"""How far sync has come, how fast, and when it should be done: `SyncProgress` notices at
most once a second while blocks connect, and a `SyncFinished` notice at the end."""

from __future__ import annotations

from collections import deque

from meshchain.core.events import SyncFinished, SyncProgress

# Ours: at most one progress notice a second (a progress bar needs no more).
PROGRESS_INTERVAL = 1.0
# Ours: the rate is measured over the last this many notices (about ten seconds), so it
# follows changes in speed without jumping with every batch.
RATE_SAMPLES = 10


class SyncMeter:
    def __init__(self) -> None:
        self.active = False
        self._started = 0.0
        self._start_height = 0
        self._last_notice = 0.0
        self._samples: deque[tuple[float, int]] = deque(maxlen=RATE_SAMPLES)

    def begin(self, now: float, height: int) -> None:
        if self.active:
            return
        self.active = True
        self._started = now
        self._start_height = height
        self._last_notice = now
        self._samples.clear()
        self._samples.append((now, height))

    def connected(self, now: float, height: int, target: int) -> SyncProgress | None:
        """A progress notice if one is due."""
        if not self.active or now < self._last_notice + PROGRESS_INTERVAL:
            return None
        self._last_notice = now
        self._samples.append((now, height))
        first_time, first_height = self._samples[0]
        elapsed = now - first_time
        rate = (height - first_height) / elapsed if elapsed > 0 else 0.0
        eta = max(0, target - height) / rate if rate > 0 else None
        return SyncProgress(height, target, round(rate, 1), None if eta is None else round(eta, 1))

    def finish(self, now: float, height: int) -> SyncFinished | None:
        """The closing notice, if blocks were connected since `begin`."""
        if not self.active:
            return None
        self.active = False
        blocks = height - self._start_height
        if blocks <= 0:
            return None
        return SyncFinished(height, blocks, round(now - self._started, 3))

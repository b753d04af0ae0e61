"""A virtual clock and a seeded event heap.

Events at the same virtual time run in the order they were scheduled (a sequence number
breaks ties), and every random choice comes from a `random.Random` derived from the run
seed and a name, so a run is a pure function of its scenario and seed.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

Callback = Callable[..., object]  # any result is ignored


class Simulator:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.now = 0.0
        self.events_processed = 0
        self._heap: list[tuple[float, int, Callback, tuple[Any, ...]]] = []
        self._sequence = 0

    def rng(self, name: str) -> random.Random:
        """An independent generator for one purpose, derived from the run seed."""
        return random.Random(f"{self.seed}/{name}")

    def at(self, time: float, callback: Callback, *args: Any) -> None:
        if time < self.now:
            time = self.now
        self._sequence += 1
        heapq.heappush(self._heap, (time, self._sequence, callback, args))

    def after(self, delay: float, callback: Callback, *args: Any) -> None:
        self.at(self.now + delay, callback, *args)

    @property
    def pending(self) -> int:
        return len(self._heap)

    def run(self, until: float, max_events: int | None = None) -> None:
        """Process events up to virtual time `until` (inclusive), or `max_events` of them."""
        heap = self._heap
        pop = heapq.heappop
        budget = max_events if max_events is not None else -1
        processed = 0
        while heap and heap[0][0] <= until and processed != budget:
            time, _, callback, args = pop(heap)
            self.now = time
            callback(*args)
            processed += 1
        self.events_processed += processed
        if not heap or heap[0][0] > until:
            self.now = max(self.now, until)

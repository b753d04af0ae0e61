"""A virtual clock and a seeded event heap.

Events at the same virtual time run in the order they were scheduled (a sequence number
breaks ties), and every random choice comes from a `random.Random` derived from the run
seed and a name, so a run is a pure function of its scenario and seed.

A series (`at_series`: one message fanned out to many peers) takes its sequence numbers
when it is scheduled, exactly as that many `at` calls would, but keeps only its next event
on the heap, each entry holding the one after it: the heap stays about as small as the
number of messages in flight rather than of deliveries, and each of its events costs one
heap replace instead of a push and a pop. The order of events, and so the run, is the
same as with one `at` per event.
"""

from __future__ import annotations

import gc
import heapq
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

Callback = Callable[..., object]  # any result is ignored
# Allocations of container objects between two young collections of the cyclic GC.
RUN_GC_THRESHOLD = 1_000_000
# time, sequence, callback, its arguments, and the next event of its series (or None).
Entry = tuple[float, int, Callback, tuple[Any, ...], "Entry | None"]


class Simulator:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.now = 0.0
        self.events_processed = 0
        self._heap: list[Entry] = []
        self._sequence = 0

    def rng(self, name: str) -> random.Random:
        """An independent generator for one purpose, derived from the run seed."""
        return random.Random(f"{self.seed}/{name}")

    def at(self, time: float, callback: Callback, *args: Any) -> None:
        if time < self.now:
            time = self.now
        self._sequence += 1
        heapq.heappush(self._heap, (time, self._sequence, callback, args, None))

    def after(self, delay: float, callback: Callback, *args: Any) -> None:
        self.at(self.now + delay, callback, *args)

    def at_series(
        self, times: Sequence[float], callback: Callback, arguments: Sequence[tuple[Any, ...]]
    ) -> None:
        """`callback(*arguments[i])` at `times[i]` for each i: `at` called in that order."""
        self.at_series_each(times, [callback] * len(times), arguments)

    def at_series_each(
        self,
        times: Sequence[float],
        callbacks: Sequence[Callback],
        arguments: Sequence[tuple[Any, ...]],
    ) -> None:
        """`callbacks[i](*arguments[i])` at `times[i]` for each i, as `at_series` does."""
        if not times:
            return
        now = self.now
        sequence = self._sequence
        self._sequence += len(times)
        clamped = [time if time >= now else now for time in times]
        # Stable, so equal times keep their sequence order.
        order = sorted(range(len(clamped)), key=clamped.__getitem__)
        following: Entry | None = None
        for index in reversed(order):
            following = (
                clamped[index],
                sequence + 1 + index,
                callbacks[index],
                arguments[index],
                following,
            )
        assert following is not None
        heapq.heappush(self._heap, following)

    @property
    def pending(self) -> int:
        """Events scheduled and not yet run, those of series waiting behind the heap too."""
        count = 0
        for entry in self._heap:
            following: Entry | None = entry
            while following is not None:
                count += 1
                following = following[4]
        return count

    def run(self, until: float, max_events: int | None = None) -> None:
        """Process events up to virtual time `until` (inclusive), or `max_events` of them."""
        heap = self._heap
        pop = heapq.heappop
        replace = heapq.heapreplace
        budget = max_events if max_events is not None else -1
        processed = 0
        while heap and processed != budget:
            time, _, callback, args, following = heap[0]
            if time > until:
                break
            if following is None:
                pop(heap)
            else:
                replace(heap, following)
            self.now = time
            callback(*args)
            processed += 1
        self.events_processed += processed
        if not heap or heap[0][0] > until:
            self.now = max(self.now, until)


@contextmanager
def rare_collections(threshold: int = RUN_GC_THRESHOLD) -> Iterator[None]:
    """Let the cyclic GC's young generation grow to `threshold` objects for a while.

    A run allocates millions of short-lived containers (messages in flight, actions)
    beside millions of long-lived ones (every node's ledger, mempool and chain). With
    CPython's default of 700, messages still in flight survive young collections, are
    promoted, and set off full collections that walk every node's state again: on
    scale.toml about a fifth of the run went to the GC. Simulated nodes make no cyclic
    garbage in steady state (a 12 s scale run collects none; a stopped `Node` is the
    exception), so collecting rarely costs no memory. The old setting comes back after.
    """
    old = gc.get_threshold()
    gc.set_threshold(threshold, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)

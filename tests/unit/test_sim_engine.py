"""The simulator's clock and heap: ordering, stopping, and seeded randomness."""

from __future__ import annotations

import gc

import pytest

from meshchain.sim.engine import Simulator, rare_collections


def test_events_at_one_time_run_in_the_order_they_were_scheduled() -> None:
    sim = Simulator(1)
    order: list[str] = []
    sim.at(2.0, order.append, "late")
    for name in ("first", "second", "third"):
        sim.at(1.0, order.append, name)
    sim.at(0.5, order.append, "early")
    sim.run(10.0)
    assert order == ["early", "first", "second", "third", "late"]


def test_an_event_scheduled_for_now_by_an_event_runs_after_those_already_due() -> None:
    sim = Simulator(1)
    order: list[str] = []

    def spawn() -> None:
        order.append("spawn")
        sim.after(0.0, order.append, "child")

    sim.at(1.0, spawn)
    sim.at(1.0, order.append, "sibling")
    sim.run(1.0)
    assert order == ["spawn", "sibling", "child"]


def test_the_past_is_clamped_to_now() -> None:
    sim = Simulator(1)
    seen: list[float] = []
    sim.at(5.0, lambda: sim.at(1.0, lambda: seen.append(sim.now)))
    sim.run(10.0)
    assert seen == [5.0]


def test_run_stops_at_until_inclusive_and_advances_the_clock() -> None:
    sim = Simulator(1)
    fired: list[float] = []
    for time in (1.0, 2.0, 3.0, 3.5):
        sim.at(time, lambda: fired.append(sim.now))
    sim.run(3.0)
    assert fired == [1.0, 2.0, 3.0]
    assert sim.now == 3.0
    assert sim.pending == 1
    assert sim.events_processed == 3
    sim.run(3.25)  # nothing due: the clock still moves to `until`
    assert sim.now == 3.25
    assert fired == [1.0, 2.0, 3.0]
    sim.run(4.0)
    assert fired == [1.0, 2.0, 3.0, 3.5]
    assert sim.now == 4.0
    assert sim.events_processed == 4


def test_an_event_budget_leaves_the_clock_at_the_last_event() -> None:
    sim = Simulator(1)
    for time in (1.0, 2.0, 3.0):
        sim.at(time, lambda: None)
    sim.run(10.0, max_events=2)
    assert sim.now == 2.0
    assert sim.pending == 1


def test_named_generators_are_reproducible_and_independent() -> None:
    first, again = Simulator(7), Simulator(7)
    ours, theirs = first.rng("a"), again.rng("a")
    assert [ours.random() for _ in range(3)] == [theirs.random() for _ in range(3)]
    a, b = first.rng("a"), first.rng("b")
    assert [a.random() for _ in range(5)] != [b.random() for _ in range(5)]
    # Drawing from one stream does not move another.
    busy, idle = Simulator(7), Simulator(7)
    busy_a, busy_b = busy.rng("a"), busy.rng("b")
    for _ in range(100):
        busy_a.random()
    assert busy_b.random() == idle.rng("b").random()
    assert Simulator(8).rng("a").random() != Simulator(7).rng("a").random()


def scheduled(as_series: bool) -> list[tuple[float, str]]:
    """What runs, and when, with six events scheduled as a series or one by one."""
    times = [0.3, 0.1, 0.3, 0.2, 0.1, 0.0]
    sim = Simulator(1)
    order: list[tuple[float, str]] = []

    def note(name: str) -> None:
        order.append((sim.now, name))

    sim.at(0.1, note, "before")
    sim.at(0.5, lambda: sim.at(0.2, note, "late, clamped"))
    if as_series:
        sim.at_series(times, note, [(f"s{i}",) for i in range(len(times))])
    else:
        for i, time in enumerate(times):
            sim.at(time, note, f"s{i}")
    sim.at(0.1, note, "after")
    sim.at(0.3, lambda: sim.at_series([0.3, 0.4], note, [("child 1",), ("child 2",)]))
    assert sim.pending == 10
    sim.run(0.25)
    assert sim.pending == 4
    sim.run(10.0)
    assert sim.pending == 0
    assert sim.events_processed == 13
    return order


def test_a_series_runs_exactly_as_the_same_at_calls_would() -> None:
    plain = scheduled(as_series=False)
    assert scheduled(as_series=True) == plain
    assert [name for _, name in plain][:6] == ["s5", "before", "s1", "s4", "after", "s3"]


def test_an_empty_series_schedules_nothing() -> None:
    sim = Simulator(1)
    sim.at_series([], print, [])
    assert sim.pending == 0


def test_rare_collections_raises_the_young_threshold_and_restores_it() -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    def failing_run() -> None:
        with rare_collections(123_456):
            seen.append(gc.get_threshold())
            raise RuntimeError("the run failed")

    with pytest.raises(RuntimeError):
        failing_run()
    assert seen == [(123_456, *before[1:])]
    assert gc.get_threshold() == before

"""Fixtures shared by the integration tests: `run` runs an async scenario once on
asyncio's default event loop and once on uvloop (the loops a node may use)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from loops import LOOPS, SCENARIO_DEADLINE, Runner


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a scenario on the default event loop and on uvloop (what nodes use)."""
    factory = asyncio.new_event_loop
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop

    def runner(test: Callable[[], Awaitable[None]]) -> None:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(asyncio.wait_for(test(), SCENARIO_DEADLINE))

    return runner

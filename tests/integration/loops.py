"""Names shared by the integration tests (the `run` fixture is in conftest.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

LOOPS = ["asyncio", "uvloop"]
SCENARIO_DEADLINE = 180.0  # seconds: a scenario that hangs fails instead of stalling CI
Runner = Callable[[Callable[[], Awaitable[None]]], None]

"""The transport benchmark's pieces run: its stand-in service keeps up with what
`PeerConnection` asks of a `P2PService` (it once fell behind, and the bench stopped at
its first handshake with nothing in the test suite to say so)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import transport  # bench/transport.py

ROUND_TRIPS = 50
BLOCKS = 32
DEADLINE_S = 60.0


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "secure"])
def test_transport_bench_connects_round_trips_and_streams(plain: bool) -> None:
    async def run() -> None:
        chain_id, block, small = transport.make_messages()
        service = transport.Service(1, chain_id, plain=plain)
        servers = await transport.serve_both(chain_id, small)
        try:
            port = transport.ports(servers)[0 if plain else 1]
            link, client = await transport.dial(service, port)
            p50, p99, per_second = await transport.ping_pong(link, client, small, ROUND_TRIPS)
            assert 0 < p50 <= p99
            assert per_second > 0
            assert await transport.bulk(link, client, block, BLOCKS) > 0
            await transport.hang_up(link)
            assert link.session is not None
            assert link.session.closed
        finally:
            await transport.close_all(servers)

    asyncio.run(asyncio.wait_for(run(), DEADLINE_S))

"""A proof-of-work node mines on the real runtime: off its event loop, block after block."""

from __future__ import annotations

import asyncio
import random
import time

from loops import Runner

from meshchain.cli.setup import make_genesis
from meshchain.core.chain.genesis import ChainMode
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import NodeStarted
from meshchain.core.node import Node, NodeConfig
from meshchain.core.store import MemoryStore
from meshchain.runtime.driver import NodeDriver

DEADLINE = 60.0


def test_a_pow_node_mines_blocks_while_its_loop_stays_free(run: Runner) -> None:
    genesis = make_genesis(
        ChainMode.PUBLIC,
        chain_name="mining-live",
        validators=[],
        members=[],
        allocations=[],
        block_interval_ms=1_000,
        pow_difficulty=4_096,
    )
    key = SecretKey.generate(random.Random(5))

    async def scenario() -> None:
        node = Node(NodeConfig(genesis, key), MemoryStore(), random.Random(5))
        driver = NodeDriver(node)
        driver.feed(NodeStarted())
        ticks = 0
        end = time.monotonic() + DEADLINE
        try:
            while node.chain.height < 3:
                assert time.monotonic() < end, "no blocks mined in time"
                await asyncio.sleep(0.01)
                ticks += 1  # the loop keeps turning while the worker hashes
        finally:
            driver.stop()
        assert ticks > 3
        assert node.chain.height >= 3

    run(scenario)

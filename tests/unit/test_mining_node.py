"""A proof-of-work node: templates to its miner, new work when the tip moves."""

from __future__ import annotations

import random

from meshchain.cli.setup import make_genesis
from meshchain.core.chain.genesis import ChainMode
from meshchain.core.consensus.pow import ProofOfWork, mine_batch
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import (
    BlockAccepted,
    BlockMined,
    MineBlock,
    NodeStarted,
    ScheduleTimer,
    TimerFired,
)
from meshchain.core.node import MINING_TEMPLATE_REFRESH, PRODUCE_TIMER, Node, NodeConfig
from meshchain.core.store import MemoryStore

T0 = 1_700_000_000_000


def pow_node(miner: bool) -> Node:
    genesis = make_genesis(
        ChainMode.PUBLIC,
        chain_name="mining-test",
        validators=[],
        members=[],
        allocations=[],
        block_interval_ms=5_000,
        timestamp_ms=T0,
        pow_difficulty=16,
    )
    key = SecretKey.generate(random.Random(3)) if miner else None
    return Node(NodeConfig(genesis, key), MemoryStore(), random.Random(1))


def solve(template: MineBlock) -> BlockMined:
    found = None
    start = 0
    while found is None:
        found = mine_batch(template.block.header, start, 64)
        start += 64
    return BlockMined(type(template.block)(found, template.block.transactions))


def test_a_miner_gets_a_template_at_start_and_a_new_one_after_each_block() -> None:
    node = pow_node(miner=True)
    assert isinstance(node.engine, ProofOfWork)
    start = node.handle(NodeStarted(), T0 / 1000 + 1)
    [template] = [a for a in start if isinstance(a, MineBlock)]
    assert template.block.header.height == 1
    refresh = [a for a in start if isinstance(a, ScheduleTimer) and a.timer == PRODUCE_TIMER]
    assert refresh[0].at == T0 / 1000 + 1 + MINING_TEMPLATE_REFRESH
    accepted = node.handle(solve(template), T0 / 1000 + 2)
    assert [a.produced for a in accepted if isinstance(a, BlockAccepted)] == [True]
    [following] = [a for a in accepted if isinstance(a, MineBlock)]
    assert following.block.header.height == 2
    assert following.block.header.parent == node.chain.tip_hash
    again = node.handle(TimerFired(PRODUCE_TIMER), T0 / 1000 + 12)
    assert [a.block.header.height for a in again if isinstance(a, MineBlock)] == [2]


def test_a_node_without_a_key_does_not_mine() -> None:
    node = pow_node(miner=False)
    assert not any(isinstance(a, MineBlock) for a in node.handle(NodeStarted(), T0 / 1000))

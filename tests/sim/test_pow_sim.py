"""Proof of work in the simulator: a partitioned network converges on the most work,
and the transactions of abandoned blocks are mined again."""

from __future__ import annotations

from pathlib import Path

from meshchain.core.chain.block import BLOCK_CODEC, block_hash
from meshchain.core.chain.tx import txid_of
from meshchain.sim.scenario import load_scenario
from meshchain.sim.world import World

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "pow-partition.toml"


def test_a_healed_pow_partition_converges_and_loses_no_transaction() -> None:
    world = World(load_scenario(SCENARIO), 1)
    world.run()
    assert world.violations == []
    report = world.report()["metrics"]
    assert report["reorganizations"] >= 20  # about half the nodes switched branch
    assert report["chain"]["height_min"] == report["chain"]["height_max"]
    node = world.hosts[0].node
    assert node is not None
    chain = node.chain
    blocks = [chain.block(chain.hash_at(h) or b"") for h in range(1, chain.height + 1)]
    main = {chain.hash_at(h) for h in range(chain.height + 1)}
    mined = [tx for block in blocks if block is not None for tx in block.transactions]
    assert all(block is not None for block in blocks)
    final = {txid_of(tx) for tx in mined}
    spent = {(tx.body.sender, tx.body.nonce) for tx in mined}
    abandoned = [BLOCK_CODEC.decode(raw) for h, raw in world.block_pool.items() if h not in main]
    assert abandoned  # the losing half did mine its own branch
    for block in abandoned:
        assert block_hash(block) not in main
        for tx in block.transactions:
            # Mined again on the winning branch, or replaced by a conflicting spend of
            # the same nonce that the other half mined meanwhile.
            assert txid_of(tx) in final or (tx.body.sender, tx.body.nonce) in spent

"""Sync experiments (`[sync]` in a scenario, scenarios/sync.toml): a fresh node catches up
with nodes that already hold a long chain, and how long that takes from 1 or more peers.

Every node but the last (the joiner) holds the same `blocks` blocks from the start: the
chain is made once at world setup (real PoA blocks signed by the world's authorities,
`txs_per_block` signed transfers each) and written into their stores, so nothing is
mined during the run. The joiner starts at `join_at` and dials the first `sources`
holders; nobody makes blocks. The run's `sync` metrics say when its sync finished.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Any

from meshchain.core.chain.block import Block
from meshchain.core.chain.chainstate import ChainState
from meshchain.core.chain.tx import TxBody, VerifiedTx, sign_transaction, verify_transaction
from meshchain.core.consensus.poa import ProofOfAuthority
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.store import MemoryStore

if TYPE_CHECKING:
    from meshchain.sim.config import SimConfig
    from meshchain.sim.world import World

# Transfers in preloaded blocks: a small amount and a fee well over the relay minimum.
PRELOAD_AMOUNT = 1_000
PRELOAD_FEE = 2_000
# One preloaded chain per (chain id, blocks, transactions): the runs of a comparison
# share a genesis, so the second run reuses what the first built.
_CHAINS: dict[tuple[bytes, int, int], MemoryStore] = {}


def joiner(config: SimConfig) -> int:
    return config.nodes - 1


def sync_topology(config: SimConfig) -> list[list[int]]:
    """The joiner dials its sources; the holders need no links to one another."""
    assert config.sync is not None
    chosen: list[list[int]] = [[] for _ in range(config.total_nodes)]
    chosen[joiner(config)] = list(range(config.sync.sources[0]))
    return chosen


def _build_chain(world: World) -> MemoryStore:
    config, spec = world.config, world.config.sync
    assert spec is not None
    engine = ProofOfAuthority(world.genesis, world.verifier)
    chain = ChainState(world.genesis, engine, MemoryStore(), world.verifier)
    rng = random.Random(f"sync-preload/{world.seed}")
    wallets = world.wallets
    nonces = [0] * len(wallets)
    interval_ms = int(config.block_interval * 1000)
    for height in range(1, spec.blocks + 1):
        vtxs: list[VerifiedTx] = []
        for _ in range(spec.txs_per_block):
            sender = rng.randrange(len(wallets))
            recipient = wallets[rng.randrange(len(wallets))]
            body = TxBody(
                world.chain_id,
                wallets[sender].public_key,
                address_from_public_key(recipient.public_key),
                PRELOAD_AMOUNT,
                PRELOAD_FEE,
                nonces[sender],
                b"",
            )
            nonces[sender] += 1
            tx = sign_transaction(body, wallets[sender], aux_rand=rng.randbytes(32))
            vtxs.append(verify_transaction(tx, world.verifier))
        authority = world.authority_keys[height % len(world.authority_keys)]
        beneficiary = address_from_public_key(authority.public_key)
        block, _ = chain.build_block(vtxs, height * interval_ms, beneficiary)
        sealed = Block(engine.seal(block.header, authority), block.transactions)
        chain.add_block(sealed, height * interval_ms / 1000 + 1)
    assert chain.height == spec.blocks
    store = chain.store
    assert isinstance(store, MemoryStore)
    return store


def preload(world: World) -> None:
    """Write the experiment's chain into every holder's store (before they start)."""
    spec = world.config.sync
    assert spec is not None
    key = (world.chain_id, spec.blocks, spec.txs_per_block)
    source = _CHAINS.get(key)
    if source is None:
        source = _CHAINS[key] = _build_chain(world)
    for host in world.hosts[: joiner(world.config)]:
        host.store.write(source.snapshot())


def sync_report(world: World) -> dict[str, Any]:
    """When the joiner caught up, for this run's number of sources."""
    spec = world.config.sync
    assert spec is not None
    index = joiner(world.config)
    host = world.hosts[index]
    height = host.node.chain.height if host.node is not None else 0
    finished = world.metrics.sync_finished.get(index)
    seconds = None if finished is None else round(finished - spec.join_at, 3)
    return {
        "sources": spec.sources[0],
        "blocks": spec.blocks,
        "joiner_height": height,
        "seconds": seconds,
        "blocks_per_second": None if not seconds else round(spec.blocks / seconds, 1),
    }


def label(sources: int) -> str:
    return f"from_{sources}_peer{'s' if sources != 1 else ''}"


def sync_comparison(world: World, config: SimConfig, seed: int) -> dict[str, Any]:
    """This run's sync figures, and one more run per further entry of `sources`."""
    from meshchain.sim.world import World

    spec = config.sync
    assert spec is not None
    results = {label(spec.sources[0]): sync_report(world)}
    for sources in spec.sources[1:]:
        other = dataclasses.replace(config, sync=dataclasses.replace(spec, sources=(sources,)))
        run = World(other, seed)
        run.run()
        results[label(sources)] = sync_report(run) | {"violations": run.violations}
    return results

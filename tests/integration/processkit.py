"""Real `meshchain node` processes for the integration tests: a shared genesis made
here, the processes and their data directories from `meshchain.devnet`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from meshchain.cli.setup import make_genesis
from meshchain.core.chain.genesis import ChainMode
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey
from meshchain.devnet import DEADLINE, NodeProcess, ProcessNet, create_devnet, free_port

__all__ = ["DEADLINE", "NodeProcess", "ProcessNet", "free_port", "process_network"]


@contextlib.contextmanager
def process_network(
    root: Path,
    mode: ChainMode,
    validators: int,
    observers: int = 0,
    *,
    bft_timeouts_ms: tuple[int, int, int] = (1_000, 500, 200),
    block_interval_ms: int | None = None,
    log_level: str = "info",
    started: int | None = None,
    wallet: SecretKey | None = None,
) -> Iterator[ProcessNet]:
    """Data directories for `validators` + `observers` nodes of one chain, `wallet`
    (default: a new key) funded; the first `started` (default: all) are started, the
    rest wait for the test; every process is stopped when the block ends."""
    count = validators + observers
    validator_keys = [SecretKey.generate() for _ in range(validators)]
    node_keys = [SecretKey.generate() for _ in range(count)]
    wallet = wallet or SecretKey.generate()
    genesis = make_genesis(
        mode,
        chain_name=f"proc-{mode.value}",
        validators=validator_keys,
        members=node_keys,
        allocations=[(address_from_public_key(wallet.public_key), 10**15)],
        block_interval_ms=block_interval_ms,
        bft_timeouts_ms=bft_timeouts_ms,
    )
    net = create_devnet(root, genesis, node_keys, validator_keys, log_level=log_level)
    try:
        for node in net.nodes[:started]:
            node.start()
        yield net
    finally:
        net.stop()

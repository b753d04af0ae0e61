"""Creating data directories: `meshchain init` and the demo share this."""

from __future__ import annotations

import time
from pathlib import Path

from meshchain.config import (
    CONFIG_FILE,
    GENESIS_FILE,
    NODE_KEY_FILE,
    VALIDATOR_KEY_FILE,
    ConfigFile,
    save_config,
    save_genesis,
    write_key,
)
from meshchain.core.chain.genesis import (
    DEFAULT_BFT_TIMEOUT_COMMIT_MS,
    DEFAULT_BFT_TIMEOUT_PROPOSE_MS,
    DEFAULT_BFT_TIMEOUT_VOTE_MS,
    Allocation,
    ChainMode,
    ConsensusParams,
    EngineName,
    Genesis,
    Member,
    Validator,
    validate_genesis,
)
from meshchain.core.crypto.keys import SecretKey
from meshchain.errors import ConfigError

COIN = 10**8  # base units per coin, as Bitcoin's satoshi
DEFAULT_BLOCK_REWARD = 10 * COIN
DEFAULT_VALIDATOR_POWER = 10
# Per mode: the engine and its block interval (Bitcoin-like 10 s is too slow for a devnet).
MODE_DEFAULTS: dict[ChainMode, tuple[EngineName, int]] = {
    ChainMode.PUBLIC: (EngineName.POW, 5_000),  # a devnet block every few seconds
    ChainMode.CONSORTIUM: (EngineName.BFT, 1_000),
    ChainMode.PRIVATE: (EngineName.POA, 2_000),
}
DEFAULT_BFT_TIMEOUTS_MS = (
    DEFAULT_BFT_TIMEOUT_PROPOSE_MS,
    DEFAULT_BFT_TIMEOUT_VOTE_MS,
    DEFAULT_BFT_TIMEOUT_COMMIT_MS,
)
# About 65k hashes a block: a second or two of hashing in Python on one core.
DEVNET_POW_DIFFICULTY = 2**16


def make_genesis(
    mode: ChainMode,
    *,
    chain_name: str,
    validators: list[SecretKey],
    members: list[SecretKey],
    allocations: list[tuple[bytes, int]],
    block_interval_ms: int | None = None,
    timestamp_ms: int | None = None,
    pow_difficulty: int = DEVNET_POW_DIFFICULTY,  # proof-of-work chains only
    bft_timeouts_ms: tuple[int, ...] | None = None,  # BFT: propose, vote, commit
) -> Genesis:
    engine, interval = MODE_DEFAULTS[mode]
    propose, vote, commit = bft_timeouts_ms or DEFAULT_BFT_TIMEOUTS_MS
    consensus = ConsensusParams(
        engine=engine.value,
        block_interval_ms=block_interval_ms or interval,
        pow_initial_difficulty=pow_difficulty if engine is EngineName.POW else 0,
        bft_timeout_propose_ms=propose,
        bft_timeout_vote_ms=vote,
        bft_timeout_commit_ms=commit,
    )
    genesis = Genesis(
        version=1,
        chain_name=chain_name,
        mode=mode.value,
        timestamp_ms=timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
        consensus=consensus,
        block_reward=DEFAULT_BLOCK_REWARD,
        allocations=[Allocation(address, amount) for address, amount in allocations],
        members=[] if mode is ChainMode.PUBLIC else [Member(k.public_key) for k in members],
        validators=(
            []
            if engine is EngineName.POW
            else [Validator(k.public_key, DEFAULT_VALIDATOR_POWER) for k in validators]
        ),
    )
    validate_genesis(genesis)
    return genesis


def create_datadir(
    path: Path,
    genesis: Genesis,
    node_key: SecretKey,
    validator_key: SecretKey | None,
    *,
    force: bool = False,
) -> None:
    """Write genesis.toml, config.toml and keys into `path`."""
    if (path / CONFIG_FILE).exists() and not force:
        raise ConfigError(f"{path} already holds a node (use --force to overwrite)")
    path.mkdir(parents=True, exist_ok=True)
    save_genesis(path / GENESIS_FILE, genesis)
    write_key(path / NODE_KEY_FILE, node_key)
    config = ConfigFile()
    if validator_key is not None:
        write_key(path / VALIDATOR_KEY_FILE, validator_key)
        config.chain.validator_key = VALIDATOR_KEY_FILE
    save_config(path, config)

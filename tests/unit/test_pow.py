"""Proof of work: ASERT difficulty, the proof, work as weight, the median-time rule."""

from __future__ import annotations

import msgspec
import pytest

from meshchain.cli.setup import make_genesis
from meshchain.core.chain.block import Block, block_hash, header_hash
from meshchain.core.chain.chainstate import MEDIAN_TIME_SPAN, AddBlockResult, ChainState
from meshchain.core.chain.genesis import ChainMode, Genesis
from meshchain.core.consensus.pow import (
    ASERT_HALF_LIFE_BLOCKS,
    MAX_TARGET,
    ProofOfWork,
    asert_target,
    mine_batch,
    seal_fields,
    target_for_difficulty,
    with_seal,
    work,
)
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.store import MemoryStore
from meshchain.errors import RejectCode, ValidationError

SPACING = 5_000
T0 = 1_700_000_000_000
MINER = bytes(20)


def pow_genesis(difficulty: int = 8) -> Genesis:
    return make_genesis(
        ChainMode.PUBLIC,
        chain_name="pow-test",
        validators=[],
        members=[],
        allocations=[],
        block_interval_ms=SPACING,
        timestamp_ms=T0,
        pow_difficulty=difficulty,
    )


def chain(genesis: Genesis) -> ChainState:
    return ChainState(genesis, ProofOfWork(genesis), MemoryStore())


def mined(state: ChainState, timestamp_ms: int) -> Block:
    """An empty block on the tip at `timestamp_ms`, mined."""
    block, _ = state.build_block([], timestamp_ms, MINER)
    engine = state.engine
    assert isinstance(engine, ProofOfWork)
    sealed = engine.seal(block.header, SecretKey.generate())
    return Block(sealed, block.transactions)


def test_asert_keeps_the_target_on_schedule_and_doubles_per_half_life() -> None:
    anchor = target_for_difficulty(1_000)
    half_life = ASERT_HALF_LIFE_BLOCKS * SPACING
    # Parent at height h, exactly h + 1 spacings after the anchor's parent time.
    assert asert_target(anchor, 11 * SPACING, 10, SPACING, half_life) == anchor
    ahead = asert_target(anchor, 11 * SPACING - half_life, 10, SPACING, half_life)
    behind = asert_target(anchor, 11 * SPACING + half_life, 10, SPACING, half_life)
    assert ahead == anchor // 2  # a half-life early: twice as hard
    assert behind == anchor * 2  # a half-life late: half as hard
    between = asert_target(anchor, 11 * SPACING + half_life // 2, 10, SPACING, half_life)
    assert abs(between / anchor - 2**0.5) < 2e-4  # the cubic's approximation of 2**x
    assert asert_target(anchor, 10**12, 0, SPACING, half_life) == MAX_TARGET  # clamped


def test_work_is_the_expected_number_of_hashes() -> None:
    assert work(target_for_difficulty(1_000)) in (999, 1_000)  # floors of 2**256 / t
    assert work(MAX_TARGET) == 1


def test_a_mined_block_is_accepted_and_a_tampered_one_refused() -> None:
    state = chain(pow_genesis())
    block = mined(state, T0 + SPACING)
    target, _ = seal_fields(block.header)
    assert int.from_bytes(block_hash(block), "big") < target
    assert block.header.consensus[:32] == state.engine.template_consensus(state.tip_header)[:32]
    assert state.add_block(block, (T0 + SPACING) / 1000).result is AddBlockResult.CONNECTED
    assert state.finalized_height is None  # work can always be outrun: no finality
    engine = state.engine
    assert isinstance(engine, ProofOfWork)
    parent = state.header(block.header.parent)
    assert parent is not None
    easier = with_seal(block.header, target * 2, 0)
    with pytest.raises(ValidationError) as wrong_target:
        engine.check_header(easier, parent)
    assert wrong_target.value.code is RejectCode.BAD_CONSENSUS
    # Grind for a nonce whose hash misses the target: the proof fails.
    nonce = 0
    while int.from_bytes(header_hash(with_seal(block.header, target, nonce)), "big") < target:
        nonce += 1
    with pytest.raises(ValidationError, match="not below its target"):
        engine.check_header(with_seal(block.header, target, nonce), parent)
    with pytest.raises(ValidationError, match="seal must be"):
        engine.check_header(msgspec.structs.replace(block.header, consensus=b"x"), parent)


def test_mining_in_batches_finds_what_seal_finds() -> None:
    state = chain(pow_genesis(difficulty=64))
    block, _ = state.build_block([], T0 + SPACING, MINER)
    found = None
    start = 0
    while found is None:
        found = mine_batch(block.header, start, 16)
        start += 16
    engine = state.engine
    assert isinstance(engine, ProofOfWork)
    assert found == engine.seal(block.header, SecretKey.generate())


def test_blocks_found_faster_carry_more_work() -> None:
    fast, slow = chain(pow_genesis()), chain(pow_genesis())
    for n in range(1, 6):
        for state, step in ((fast, SPACING // 4), (slow, SPACING * 4)):
            block = mined(state, T0 + n * step)
            assert state.add_block(block, (T0 + n * step) / 1000).error is None
    assert fast.tip_entry.chain_weight > slow.tip_entry.chain_weight


def test_a_timestamp_not_after_the_median_of_eleven_is_refused() -> None:
    state = chain(pow_genesis())
    times = [T0 + n * SPACING for n in range(1, MEDIAN_TIME_SPAN + 2)]
    for t in times:
        assert state.add_block(mined(state, t), t / 1000).error is None
    median = state.median_time_past(state.tip_hash)
    assert median == sorted(times[-MEDIAN_TIME_SPAN:])[MEDIAN_TIME_SPAN // 2]
    block, _ = state.build_block([], median, MINER)
    assert block.header.timestamp_ms == median + 1  # templates stay valid
    stale = msgspec.structs.replace(block.header, timestamp_ms=median)
    engine = state.engine
    assert isinstance(engine, ProofOfWork)
    update = state.add_block(Block(engine.seal(stale, SecretKey.generate()), []), times[-1] / 1000)
    assert update.error is not None
    assert update.error.code is RejectCode.BAD_TIMESTAMP

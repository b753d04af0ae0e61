"""Proof of work: a block's hash must fall below a target that adjusts every block.

The header's consensus field is the target (32 bytes, big-endian) followed by an 8-byte
nonce; the proof is `block_hash(header) < target`, the block hash being the tagged hash
of the whole encoded header, so the work commits to everything in the block. A block
weighs the expected number of hashes its target takes, `2**256 // (target + 1)`, so the
chain with the most cumulative work wins (Bitcoin's rule, not the longest chain).

Difficulty follows ASERT (aserti3-2d, Bitcoin Cash since November 2020): each block's
target is computed from one fixed anchor (genesis) and the parent alone,

    target = anchor_target * 2 ** ((parent_time - anchor_time
                                     - spacing * (parent_height - anchor_height + 1))
                                    / half_life)

so a chain that runs one half-life ahead of schedule doubles its difficulty, one behind
halves it, with no window to game and no oscillation. The integer approximation of the
power of two is the one the aserti3-2d specification publishes (its cubic constants), so
every node computes the same target bit for bit.

Timestamps: a block's must exceed the median of its last 11 ancestors' (the chain
checks that for every engine) and be at most 2 hours ahead of the local clock
(Bitcoin's MAX_FUTURE_BLOCK_TIME).
"""

from __future__ import annotations

import msgspec

from meshchain.core.chain.block import BlockHeader, header_hash
from meshchain.core.chain.genesis import Genesis
from meshchain.core.crypto.keys import SecretKey
from meshchain.errors import RejectCode, ValidationError

# Bitcoin's MAX_FUTURE_BLOCK_TIME: two hours.
POW_MAX_FUTURE_DRIFT_MS = 2 * 60 * 60 * 1000
TARGET_SIZE = 32
NONCE_SIZE = 8
SEAL_SIZE = TARGET_SIZE + NONCE_SIZE
# The easiest target allowed: every hash but the largest (difficulty 1).
MAX_TARGET = 2**256 - 1
# Ours: ASERT's half-life in block intervals. Bitcoin Cash uses 2 days of 10-minute
# blocks (288); a devnet of laptops whose hash rate changes as processes start and stop
# wants to settle within minutes, so ours is 48 intervals (4 minutes at 5 s blocks).
ASERT_HALF_LIFE_BLOCKS = 48
# aserti3-2d: 16 fractional bits in the exponent, and the cubic that approximates
# 2**x - 1 on [0, 1) scaled by 2**48 (constants from the specification).
_RADIX_BITS = 16
# Nonces `seal` tries between looks at the clock-free loop's end (any size works).
SEAL_BATCH = 4_096
_CUBIC = (195_766_423_245_049, 971_821_376, 5_127)


def target_for_difficulty(difficulty: int) -> int:
    """The target at which a block takes `difficulty` hashes on average."""
    if difficulty < 1:
        raise ValueError("difficulty must be at least 1")
    return min(MAX_TARGET, 2**256 // difficulty)


def work(target: int) -> int:
    """Expected hashes to find a block at `target` (Bitcoin's GetBlockProof)."""
    return 2**256 // (target + 1)


def asert_target(
    anchor_target: int, time_diff_ms: int, height_diff: int, spacing_ms: int, half_life_ms: int
) -> int:
    """aserti3-2d: the target of the block `height_diff + 1` after the anchor, whose
    parent came `time_diff_ms` after the anchor's parent time."""
    exponent = ((time_diff_ms - spacing_ms * (height_diff + 1)) << _RADIX_BITS) // half_life_ms
    shifts = exponent >> _RADIX_BITS
    frac = exponent & ((1 << _RADIX_BITS) - 1)
    a, b, c = _CUBIC
    factor = (1 << _RADIX_BITS) + (
        (a * frac + b * frac * frac + c * frac * frac * frac + (1 << 47)) >> 48
    )
    target = anchor_target * factor
    target = target << shifts if shifts >= 0 else target >> -shifts
    target >>= _RADIX_BITS
    return max(1, min(MAX_TARGET, target))


def seal_fields(header: BlockHeader) -> tuple[int, int]:
    """(target, nonce) from a header's consensus field; ValidationError if malformed."""
    seal = header.consensus
    if len(seal) != SEAL_SIZE:
        raise ValidationError(RejectCode.BAD_CONSENSUS, f"pow seal must be {SEAL_SIZE} bytes")
    return int.from_bytes(seal[:TARGET_SIZE], "big"), int.from_bytes(seal[TARGET_SIZE:], "big")


def with_seal_bytes(target: int, nonce: int) -> bytes:
    return target.to_bytes(TARGET_SIZE, "big") + nonce.to_bytes(NONCE_SIZE, "big")


def with_seal(header: BlockHeader, target: int, nonce: int) -> BlockHeader:
    return msgspec.structs.replace(header, consensus=with_seal_bytes(target, nonce))


class ProofOfWork:
    name = "pow"
    max_future_drift_ms = POW_MAX_FUTURE_DRIFT_MS
    finality_depth: int | None = None  # the most work wins: any block can be outrun
    certified_by_child = False  # the seal in a header proves the block itself

    def __init__(self, genesis: Genesis) -> None:
        difficulty = genesis.consensus.pow_initial_difficulty
        if difficulty < 1:
            raise ValueError("proof of work needs consensus.pow_initial_difficulty >= 1")
        self.spacing_ms = genesis.consensus.block_interval_ms
        self.half_life_ms = ASERT_HALF_LIFE_BLOCKS * self.spacing_ms
        self.anchor_target = target_for_difficulty(difficulty)
        # The anchor is genesis, at its target; aserti3-2d counts from the anchor's
        # parent's time, which for genesis is one spacing before it: a chain exactly on
        # schedule keeps the genesis target.
        self.anchor_parent_time_ms = genesis.timestamp_ms - self.spacing_ms

    def next_target(self, parent: BlockHeader) -> int:
        """The target every child of `parent` must carry."""
        return asert_target(
            self.anchor_target,
            parent.timestamp_ms - self.anchor_parent_time_ms,
            parent.height,
            self.spacing_ms,
            self.half_life_ms,
        )

    def template_consensus(self, parent: BlockHeader) -> bytes:
        """A new block's consensus field before mining: the required target, nonce 0."""
        return with_seal_bytes(self.next_target(parent), 0)

    def check_header(self, header: BlockHeader, parent: BlockHeader) -> None:
        target, _ = seal_fields(header)
        expected = self.next_target(parent)
        if target != expected:
            raise ValidationError(
                RejectCode.BAD_CONSENSUS, f"target {target:#x} is not the required {expected:#x}"
            )
        if int.from_bytes(header_hash(header), "big") >= target:
            raise ValidationError(RejectCode.BAD_CONSENSUS, "block hash is not below its target")

    def block_weight(self, header: BlockHeader) -> int:
        if header.height == 0:
            return 1  # genesis carries no proof; every chain shares it
        target, _ = seal_fields(header)
        return work(target)

    def can_propose(self, height: int, public_key: bytes) -> bool:
        return True  # anyone may mine

    def seal(self, header: BlockHeader, key: SecretKey) -> BlockHeader:
        """Mine until a nonce meets the target, in this thread: for tests and tools. A
        node mines in bounded batches (`mine`) off its event loop."""
        nonce = 0
        while True:
            sealed = mine_batch(header, nonce, SEAL_BATCH)
            if sealed is not None:
                return sealed
            nonce += SEAL_BATCH


def mine_batch(header: BlockHeader, start: int, tries: int) -> BlockHeader | None:
    """Try `tries` nonces from `start`; the sealed header if one meets the target.

    A bounded batch, so that whoever runs it (a worker process, the simulator) can stop
    between batches the moment a new tip makes the work stale.
    """
    target, _ = seal_fields(header)
    for nonce in range(start, start + tries):
        sealed = with_seal(header, target, nonce % 2**64)
        if int.from_bytes(header_hash(sealed), "big") < target:
            return sealed
    return None

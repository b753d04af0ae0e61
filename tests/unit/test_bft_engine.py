"""The BFT engine's checks (commit certificates, seals, evidence) and the evidence pool."""

from __future__ import annotations

import random

import msgspec
import pytest

from meshchain.cli.setup import make_genesis
from meshchain.core.chain.block import BlockHeader, header_hash
from meshchain.core.chain.genesis import ChainMode, genesis_block
from meshchain.core.consensus.bft import MAX_EVIDENCE_AGE_HEIGHTS, BftEngine
from meshchain.core.consensus.bftevidence import (
    EVIDENCE_WINDOW_HEIGHTS,
    MAX_PENDING_EVIDENCE,
    EvidencePool,
    duplicate,
)
from meshchain.core.consensus.bftwire import SEAL_CODEC, BftSeal, Commit, CommitSig
from meshchain.core.consensus.tendermint import VoteKind
from meshchain.core.crypto.keys import SecretKey
from meshchain.errors import RejectCode, ValidationError

KEYS = [SecretKey.generate(random.Random(i)) for i in range(4)]
GENESIS = make_genesis(
    ChainMode.CONSORTIUM,
    chain_name="bft-engine",
    validators=KEYS,
    members=KEYS,
    allocations=[],
    timestamp_ms=0,
)
ENGINE = BftEngine(GENESIS)
BLOCK = bytes([7]) * 32


def commit_by(keys: list[SecretKey], height: int = 5, value: bytes = BLOCK) -> Commit:
    sigs = []
    for key in keys:
        vote = ENGINE.sign_vote(key, VoteKind.PRECOMMIT, height, 0, value)
        sigs.append(CommitSig(vote.validator, vote.signature))
    return Commit(height, 0, value, sorted(sigs, key=lambda s: s.validator))


def rejected(call: object) -> str:
    assert callable(call)
    with pytest.raises(ValidationError) as caught:
        call()
    assert caught.value.code is RejectCode.BAD_CONSENSUS
    return caught.value.detail


def test_a_commit_of_three_of_four_equal_validators_is_accepted_two_is_not() -> None:
    ENGINE.check_commit(commit_by(KEYS[:3]), 5, BLOCK)
    assert "holds 20 of 40" in rejected(lambda: ENGINE.check_commit(commit_by(KEYS[:2]), 5, BLOCK))


def test_a_commit_is_for_one_height_and_block_and_counts_each_validator_once() -> None:
    good = commit_by(KEYS[:3])
    rejected(lambda: ENGINE.check_commit(good, 6, BLOCK))
    rejected(lambda: ENGINE.check_commit(good, 5, bytes(32)))
    twice = Commit(5, 0, BLOCK, [good.signatures[0], good.signatures[0], good.signatures[1]])
    assert "twice" in rejected(lambda: ENGINE.check_commit(twice, 5, BLOCK))
    forged = Commit(5, 0, BLOCK, [*good.signatures[:2], CommitSig(3, bytes(64))])
    assert "signature" in rejected(lambda: ENGINE.check_commit(forged, 5, BLOCK))
    outsider = Commit(5, 0, BLOCK, [*good.signatures, CommitSig(9, bytes(64))])
    assert "not in the set" in rejected(lambda: ENGINE.check_commit(outsider, 5, BLOCK))
    # A signature moved to another round is not a precommit of that round.
    moved = Commit(5, 1, BLOCK, good.signatures)
    rejected(lambda: ENGINE.check_commit(moved, 5, BLOCK))


def header_on(parent: BlockHeader, seal: BftSeal) -> BlockHeader:
    return msgspec.structs.replace(
        parent,
        height=parent.height + 1,
        parent=header_hash(parent),
        consensus=SEAL_CODEC.encode(seal),
    )


def test_a_header_proves_its_parent_final() -> None:
    genesis_header = genesis_block(GENESIS).header
    first = header_on(genesis_header, BftSeal(None, []))
    ENGINE.check_header(first, genesis_header)
    commit = commit_by(KEYS[:3], 1, header_hash(first))
    ENGINE.check_header(header_on(first, BftSeal(commit, [])), first)
    assert "lacks" in rejected(
        lambda: ENGINE.check_header(header_on(first, BftSeal(None, [])), first)
    )
    no_parent = header_on(genesis_header, BftSeal(commit, []))
    rejected(lambda: ENGINE.check_header(no_parent, genesis_header))
    garbage = msgspec.structs.replace(first, consensus=b"\x01\x02")
    assert "seal" in rejected(lambda: ENGINE.check_header(garbage, genesis_header))


def test_evidence_needs_two_signed_votes_for_one_slot() -> None:
    a = ENGINE.sign_vote(KEYS[1], VoteKind.PREVOTE, 10, 2, bytes([1]) * 32)
    b = ENGINE.sign_vote(KEYS[1], VoteKind.PREVOTE, 10, 2, None)
    ENGINE.check_evidence(duplicate(a, b), 11)
    rejected(lambda: ENGINE.check_evidence(duplicate(a, a), 11))
    other_round = ENGINE.sign_vote(KEYS[1], VoteKind.PREVOTE, 10, 3, None)
    rejected(lambda: ENGINE.check_evidence(duplicate(a, other_round), 11))
    assert "future" in rejected(lambda: ENGINE.check_evidence(duplicate(a, b), 10))
    too_late = 10 + MAX_EVIDENCE_AGE_HEIGHTS + 1
    assert "too old" in rejected(lambda: ENGINE.check_evidence(duplicate(a, b), too_late))
    forged = msgspec.structs.replace(b, signature=bytes(64))
    rejected(lambda: ENGINE.check_evidence(duplicate(a, forged), 11))


def test_the_evidence_pool_records_once_and_catches_late_votes() -> None:
    pool = EvidencePool()
    a = ENGINE.sign_vote(KEYS[2], VoteKind.PRECOMMIT, 4, 0, BLOCK)
    b = ENGINE.sign_vote(KEYS[2], VoteKind.PRECOMMIT, 4, 0, None)
    evidence = duplicate(a, b)
    assert pool.add(evidence)
    assert not pool.add(duplicate(b, a))  # the same evidence, either order
    assert pool.for_block(4, 10) == []  # not in a block of its own height
    assert pool.for_block(5, 10) == [evidence]
    pool.recorded([evidence])
    assert pool.for_block(9, 10) == []
    assert not pool.add(evidence)  # recorded: never again
    pool.remember(4, [a])
    assert pool.late_conflict(b) == a
    assert pool.late_conflict(a) is None
    pool.remember(4 + EVIDENCE_WINDOW_HEIGHTS, [])
    assert pool.late_conflict(b) is None  # forgotten after the window


def test_the_evidence_pool_is_bounded() -> None:
    pool = EvidencePool()
    added = 0
    for height in range(MAX_PENDING_EVIDENCE + 5):
        a = ENGINE.sign_vote(KEYS[0], VoteKind.PREVOTE, height + 1, 0, BLOCK)
        b = ENGINE.sign_vote(KEYS[0], VoteKind.PREVOTE, height + 1, 0, None)
        added += pool.add(duplicate(a, b))
    assert added == MAX_PENDING_EVIDENCE
    assert len(pool.pending) == MAX_PENDING_EVIDENCE

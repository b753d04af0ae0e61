"""What BFT consensus puts on the wire and in blocks: signed votes and proposals,
commit certificates, equivocation evidence, and the block header's consensus field.

Votes and proposals are signed (BIP340) over a tagged hash of their content and the
chain id, so a signature is good for one chain, one height, one round and one step
only. A validator is named by its index in the genesis validator list (sorted by key,
as `ValidatorSet` sorts them): two bytes on the wire instead of a 32-byte key.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from meshchain.core.chain.block import Block
from meshchain.core.chain.genesis import MAX_VALIDATORS
from meshchain.core.crypto.hashing import tagged_hasher
from meshchain.core.wire.codec import Codec, Hash32, Signature64, UInt, UInt16, WireStruct, encode

# Ours: evidence a block may carry. Each item is two votes (~250 bytes), so a full list
# stays far inside MAX_CONSENSUS_FIELD_SIZE next to a 1,000-validator commit.
MAX_EVIDENCE_PER_BLOCK = 32
# A vote's value: a 32-byte block hash, or empty for nil.
VoteValue = Annotated[bytes, msgspec.Meta(max_length=32)]

_vote_hash = tagged_hasher("meshchain/bft-vote")
_proposal_hash = tagged_hasher("meshchain/bft-proposal")


class SignedVote(WireStruct, frozen=True):
    kind: UInt16  # tendermint.VoteKind: 1 prevote, 2 precommit
    height: UInt
    round: UInt
    value: VoteValue  # b"": nil
    validator: UInt16  # index in the validator set
    signature: Signature64


class CommitSig(WireStruct, frozen=True):
    validator: UInt16
    signature: Signature64


class Commit(WireStruct, frozen=True):
    """Precommits of more than 2/3 of the voting power for one block: its finality proof."""

    height: UInt
    round: UInt
    block_hash: Hash32
    signatures: Annotated[list[CommitSig], msgspec.Meta(max_length=MAX_VALIDATORS)]


class DuplicateVote(WireStruct, frozen=True):
    """Evidence: one validator signed two different votes for one height, round and kind."""

    first: SignedVote
    second: SignedVote


class BftSeal(WireStruct, frozen=True):
    """A BFT block header's consensus field: the parent's commit certificate (none for
    the first block after genesis) and evidence of misbehaviour to record on chain."""

    last_commit: Commit | None
    evidence: Annotated[list[DuplicateVote], msgspec.Meta(max_length=MAX_EVIDENCE_PER_BLOCK)]


class SignedProposal(WireStruct, frozen=True):
    height: UInt
    round: UInt
    valid_round: int  # -1, or the round whose prevotes made the block valid
    block: Block
    signature: Signature64


SEAL_CODEC: Codec[BftSeal] = Codec(BftSeal)
COMMIT_CODEC: Codec[Commit] = Codec(Commit)


def vote_sign_hash(
    chain_id: bytes, kind: int, height: int, round_: int, value: bytes, validator: int
) -> bytes:
    return _vote_hash(encode((chain_id, kind, height, round_, value, validator)))


def proposal_sign_hash(
    chain_id: bytes, height: int, round_: int, valid_round: int, block_hash: bytes
) -> bytes:
    return _proposal_hash(encode((chain_id, height, round_, valid_round, block_hash)))


def vote_of_commit(commit: Commit, sig: CommitSig) -> SignedVote:
    """The precommit a commit signature stands for (PRECOMMIT = 2)."""
    return SignedVote(
        2, commit.height, commit.round, commit.block_hash, sig.validator, sig.signature
    )

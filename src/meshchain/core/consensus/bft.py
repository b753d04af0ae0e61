"""The BFT engine as the chain core sees it: what makes a block's consensus field valid.

A block is final once more than 2/3 of the voting power precommitted it (Tendermint).
That certificate cannot be inside the block it certifies, so it travels in the next
block's consensus field (`BftSeal.last_commit`), as CometBFT's LastCommit does; the
newest block's own certificate is kept beside it by the node. `check_header` therefore
proves the *parent* final: a header chain is checked link by link without votes, which
is what headers-first sync needs (`certified_by_child`). The voting itself is
`tendermint.py` (the algorithm) driven by `bftnode.py` (signatures, log, gossip).
"""

from __future__ import annotations

from meshchain.core.chain.block import BlockHeader, header_hash
from meshchain.core.chain.genesis import Genesis, chain_id
from meshchain.core.consensus.bftwire import (
    SEAL_CODEC,
    BftSeal,
    Commit,
    DuplicateVote,
    SignedVote,
    vote_of_commit,
    vote_sign_hash,
)
from meshchain.core.consensus.tendermint import ValidatorSet, VoteKind
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.errors import DecodeError, RejectCode, ValidationError

# CometBFT bounds block time by its BFT-time median; we keep the chain's median-of-11
# rule and refuse blocks more than this far ahead of our clock (as proof of authority).
BFT_MAX_FUTURE_DRIFT_MS = 15_000
# Ours: evidence older than this many heights is refused (CometBFT's evidence
# MaxAgeNumBlocks default is 100,000; our chains are young and blocks frequent).
MAX_EVIDENCE_AGE_HEIGHTS = 10_000


def _bad(detail: str) -> ValidationError:
    return ValidationError(RejectCode.BAD_CONSENSUS, detail)


class BftEngine:
    name = "bft"
    max_future_drift_ms = BFT_MAX_FUTURE_DRIFT_MS
    finality_depth: int | None = 0  # only committed blocks are connected
    certified_by_child = True

    def __init__(self, genesis: Genesis, verifier: SignatureVerifier | None = None) -> None:
        if not genesis.validators:
            raise ValueError("bft needs at least one validator")
        self.chain_id = chain_id(genesis)
        self.validators = ValidatorSet([(v.public_key, v.power) for v in genesis.validators])
        self.index = {key: i for i, key in enumerate(self.validators.keys)}
        self._verifier = verifier or SignatureVerifier()

    # --- votes and commits -------------------------------------------------------------

    def validator_key(self, index: int) -> bytes | None:
        keys = self.validators.keys
        return keys[index] if index < len(keys) else None

    def sign_vote(
        self, key: SecretKey, kind: VoteKind, height: int, round_: int, value: bytes | None
    ) -> SignedVote:
        index = self.index[key.public_key]
        raw_value = value or b""
        digest = vote_sign_hash(self.chain_id, kind, height, round_, raw_value, index)
        return SignedVote(kind, height, round_, raw_value, index, key.sign(digest))

    def check_vote(self, vote: SignedVote) -> bytes:
        """The voter's key if the vote is well formed and signed by a validator."""
        key = self.validator_key(vote.validator)
        if key is None:
            raise _bad(f"vote from validator index {vote.validator}, not in the set")
        if vote.kind not in (VoteKind.PREVOTE, VoteKind.PRECOMMIT):
            raise _bad(f"unknown vote kind {vote.kind}")
        if len(vote.value) not in (0, 32):
            raise _bad("a vote's value is a 32-byte block hash or empty (nil)")
        digest = vote_sign_hash(
            self.chain_id, vote.kind, vote.height, vote.round, vote.value, vote.validator
        )
        if not self._verifier.verify(key, digest, vote.signature):
            raise _bad(f"bad vote signature from validator {vote.validator}")
        return key

    def check_commit(self, commit: Commit, height: int, block_hash: bytes) -> None:
        """Raise unless `commit` holds precommits of more than 2/3 of the power for it."""
        if commit.height != height or commit.block_hash != block_hash:
            raise _bad(f"commit is for height {commit.height}, not block {block_hash.hex()}")
        power = 0
        seen: set[int] = set()
        for sig in commit.signatures:
            if sig.validator in seen:
                raise _bad(f"commit counts validator {sig.validator} twice")
            seen.add(sig.validator)
            key = self.check_vote(vote_of_commit(commit, sig))
            power += self.validators.power[key]
        if not self.validators.over_two_thirds(power):
            raise _bad(f"commit for height {height} holds {power} of {self.validators.total}")

    def check_evidence(self, evidence: DuplicateVote, height: int) -> None:
        first, second = evidence.first, evidence.second
        same_slot = (first.kind, first.height, first.round, first.validator) == (
            second.kind,
            second.height,
            second.round,
            second.validator,
        )
        if not same_slot or first.value == second.value:
            raise _bad("evidence votes are not two different votes for one slot")
        if first.height >= height:
            raise _bad("evidence from the future")
        if height - first.height > MAX_EVIDENCE_AGE_HEIGHTS:
            raise _bad(f"evidence from height {first.height} is too old")
        self.check_vote(first)
        self.check_vote(second)

    # --- the ConsensusEngine protocol --------------------------------------------------

    def seal_of(self, header: BlockHeader) -> BftSeal:
        try:
            return SEAL_CODEC.decode(header.consensus)
        except DecodeError as exc:
            raise _bad(f"bft seal: {exc}") from None

    def check_header(self, header: BlockHeader, parent: BlockHeader) -> None:
        seal = self.seal_of(header)
        if parent.height == 0:
            if seal.last_commit is not None:
                raise _bad("the first block has no parent to certify")
        elif seal.last_commit is None:
            raise _bad(f"block {header.height} lacks its parent's commit")
        else:
            self.check_commit(seal.last_commit, parent.height, header_hash(parent))
        for evidence in seal.evidence:
            self.check_evidence(evidence, header.height)

    def block_weight(self, header: BlockHeader) -> int:
        return 1  # only committed blocks are ever connected: there is no fork to weigh

    def can_propose(self, height: int, public_key: bytes) -> bool:
        return self.validators.proposer(height, 0) == public_key

    def template_consensus(self, parent: BlockHeader) -> bytes:
        return SEAL_CODEC.encode(BftSeal(None, []))

    def seal(self, header: BlockHeader, key: SecretKey) -> BlockHeader:
        return header  # a proposal is signed as a message; the block carries the votes

"""Evidence of equivocation: found, kept until a block records it, never recorded twice.

A validator equivocates when it signs two different votes for one height, round and
kind. The node sees it when the second vote arrives, which on a slow link may be after
the height is decided, so the first vote of every slot of the last few heights is kept
to judge late votes too. Evidence waits here until a committed block carries it; after
that it is known, and neither proposed nor gossiped again.
"""

from __future__ import annotations

from collections.abc import Iterable

from meshchain.core.consensus.bftwire import DuplicateVote, SignedVote

# Ours: evidence waiting for a block. Each is two votes (~250 bytes); honest validators
# produce none, so this bounds only what Byzantine ones can make us hold.
MAX_PENDING_EVIDENCE = 256
# Ours: finished heights whose votes we keep to catch a conflicting vote that arrives
# late (a slow link can deliver one after the height is decided).
EVIDENCE_WINDOW_HEIGHTS = 16

EvidenceKey = tuple[int, int, int, int]  # validator index, height, round, kind
Slot = tuple[int, int, int]  # kind, round, validator index


def evidence_key(evidence: DuplicateVote) -> EvidenceKey:
    vote = evidence.first
    return vote.validator, vote.height, vote.round, vote.kind


def duplicate(first: SignedVote, second: SignedVote) -> DuplicateVote:
    """The evidence of two votes for one slot, in a canonical order."""
    a, b = sorted((first, second), key=lambda vote: vote.value)
    return DuplicateVote(a, b)


class EvidencePool:
    def __init__(self) -> None:
        self.pending: dict[EvidenceKey, DuplicateVote] = {}
        self.committed: set[EvidenceKey] = set()
        self._history: dict[int, dict[Slot, SignedVote]] = {}

    def known(self, evidence: DuplicateVote) -> bool:
        key = evidence_key(evidence)
        return key in self.pending or key in self.committed

    def add(self, evidence: DuplicateVote) -> bool:
        """Keep new evidence; False if it is known already or the pool is full."""
        if self.known(evidence) or len(self.pending) >= MAX_PENDING_EVIDENCE:
            return False
        self.pending[evidence_key(evidence)] = evidence
        return True

    def for_block(self, height: int, limit: int) -> list[DuplicateVote]:
        """Evidence a block at `height` may record: from earlier heights, not recorded yet."""
        return [e for e in self.pending.values() if e.first.height < height][:limit]

    def recorded(self, evidence: Iterable[DuplicateVote]) -> None:
        """A committed block carried this evidence: done with it."""
        for item in evidence:
            key = evidence_key(item)
            self.committed.add(key)
            self.pending.pop(key, None)

    def remember(self, height: int, votes: Iterable[SignedVote]) -> None:
        """Keep the first vote of each slot of a finished height."""
        first: dict[Slot, SignedVote] = {}
        for vote in votes:
            first.setdefault((vote.kind, vote.round, vote.validator), vote)
        self._history[height] = first
        for old in [h for h in self._history if h <= height - EVIDENCE_WINDOW_HEIGHTS]:
            del self._history[old]

    def late_conflict(self, vote: SignedVote) -> SignedVote | None:
        """The kept vote that a late vote contradicts, if any (its signature unchecked)."""
        slots = self._history.get(vote.height)
        first = slots.get((vote.kind, vote.round, vote.validator)) if slots else None
        return None if first is None or first.value == vote.value else first

"""The Tendermint algorithm as one pure state machine (Buchman, Kwon, Milosevic 2018,
"The latest gossip on BFT consensus", Algorithm 1).

Inputs are proposals, votes and timeouts; outputs are effects: messages to broadcast,
timeouts to schedule, decisions, and evidence of equivocation. Nothing here signs,
sends, stores or reads a clock: the node wraps it (signatures, the write-ahead log,
gossip), the simulator and tests drive it directly. Values are opaque ids (block
hashes); `valid` says whether the value behind an id may be decided.

Thresholds are by voting power: "2f+1" is more than two thirds of the total power,
"f+1" more than one third. The line numbers in comments are the paper's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

NIL: bytes | None = None
# Ours: proposer turns remembered (a turn is height + round); older ones are recomputed
# from the start when asked, which only an old height's evidence or a replay does.
PROPOSER_TURNS_KEPT = 4_096


class Step(enum.IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class VoteKind(enum.IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


class TimeoutKind(enum.IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class Proposal(msgspec.Struct, frozen=True):
    height: int
    round: int
    value: bytes
    valid_round: int  # -1, or the round in which the proposer saw 2f+1 prevotes for value
    proposer: bytes


class Vote(msgspec.Struct, frozen=True):
    kind: VoteKind
    height: int
    round: int
    value: bytes | None  # None: nil
    validator: bytes


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds, growing with the round (CometBFT's defaults: config/config.go)."""

    propose: float = 3.0
    propose_delta: float = 0.5
    vote: float = 1.0
    vote_delta: float = 0.5

    def duration(self, kind: TimeoutKind, round_: int) -> float:
        if kind is TimeoutKind.PROPOSE:
            return self.propose + self.propose_delta * round_
        return self.vote + self.vote_delta * round_


# --- effects ---------------------------------------------------------------------------


class Broadcast(msgspec.Struct, frozen=True):
    message: Proposal | Vote


class ScheduleTimeout(msgspec.Struct, frozen=True):
    kind: TimeoutKind
    height: int
    round: int
    seconds: float


class Decide(msgspec.Struct, frozen=True):
    height: int
    round: int
    value: bytes
    commit: tuple[Vote, ...]  # the precommits for value: more than 2/3 of the power


class Equivocation(msgspec.Struct, frozen=True):
    """Two different votes of one validator for the same height, round and kind."""

    first: Vote
    second: Vote


Effect = Broadcast | ScheduleTimeout | Decide | Equivocation


# --- the validator set -------------------------------------------------------------------


class ValidatorSet:
    """Validators with voting power; proposers rotate in proportion to power.

    The rotation is CometBFT's (types/validator_set.go): each turn every validator's
    priority grows by its power, the highest priority proposes and loses the total
    power. Turn k is height + round, so every node computes the same proposer.
    """

    def __init__(self, powers: Sequence[tuple[bytes, int]]) -> None:
        if not powers or any(power <= 0 for _, power in powers):
            raise ValueError("a validator set needs validators, each with positive power")
        self.keys = [key for key, _ in sorted(powers)]
        self.power = dict(powers)
        if len(self.power) != len(powers):
            raise ValueError("a validator appears twice")
        self.total = sum(self.power.values())
        self._first_turn = 0  # the turn of self._turns[0]: older turns are forgotten
        self._turns: list[bytes] = []
        self._priority = dict.fromkeys(self.keys, 0)

    def proposer(self, height: int, round_: int) -> bytes:
        turn = height + round_
        if turn < self._first_turn:
            return ValidatorSet(list(self.power.items())).proposer(turn, 0)  # rare: replay
        while self._first_turn + len(self._turns) <= turn:
            for key in self.keys:
                self._priority[key] += self.power[key]
            chosen = max(self.keys, key=lambda k: (self._priority[k], k))
            self._priority[chosen] -= self.total
            self._turns.append(chosen)
        if len(self._turns) > 2 * PROPOSER_TURNS_KEPT:
            del self._turns[:PROPOSER_TURNS_KEPT]
            self._first_turn += PROPOSER_TURNS_KEPT
        return self._turns[turn - self._first_turn]

    def over_two_thirds(self, power: int) -> bool:
        return 3 * power > 2 * self.total

    def over_one_third(self, power: int) -> bool:
        return 3 * power > self.total


# --- vote bookkeeping --------------------------------------------------------------------


@dataclass
class _Tally:
    """One round's votes of one kind: who voted what, and the power behind each value.

    A validator that votes twice (equivocates) counts once towards each value it voted
    for, as the paper counts messages, and once towards the round's total: its second
    vote is evidence, and may still be the one that completes a value's 2f+1 at a node
    that saw the first only through gossip.
    """

    votes: dict[bytes, Vote] = field(default_factory=dict)  # each validator's first vote
    by_value: dict[bytes | None, dict[bytes, Vote]] = field(default_factory=dict)
    power_for: dict[bytes | None, int] = field(default_factory=dict)
    power: int = 0

    def add(self, vote: Vote, power: int) -> Vote | None:
        """Record a vote; the earlier, different vote if this one equivocates."""
        voters = self.by_value.setdefault(vote.value, {})
        if vote.validator in voters:
            return None  # the same vote again
        voters[vote.validator] = vote
        self.power_for[vote.value] = self.power_for.get(vote.value, 0) + power
        earlier = self.votes.get(vote.validator)
        if earlier is not None:
            return earlier
        self.votes[vote.validator] = vote
        self.power += power
        return None


class Tendermint:
    """One validator's (or an observer's: `me` None) instance for one height at a time.

    After a `Decide` the caller applies the block and calls `start(height + 1)`, as the
    paper's line 54 does; messages for other heights are ignored (the node keeps those
    for a later height itself, and helps lagging peers catch up with commits).
    """

    def __init__(
        self,
        validators: ValidatorSet,
        me: bytes | None,
        get_value: Callable[[int], bytes],
        valid: Callable[[bytes], bool],
        timeouts: Timeouts | None = None,
    ) -> None:
        self.validators = validators
        self.me = me if me in validators.power else None
        self.get_value = get_value
        self.valid = valid
        self.timeouts = timeouts or Timeouts()
        self.height = 0
        self.decisions: dict[int, bytes] = {}
        self._reset_height(0)

    def _reset_height(self, height: int) -> None:
        self.height = height
        self.round = -1
        self.step = Step.PROPOSE
        self.locked_value: bytes | None = None
        self.locked_round = -1
        self.valid_value: bytes | None = None
        self.valid_round = -1
        self._proposals: dict[int, Proposal] = {}  # the first proposal of each round
        # Every value the round's proposer proposed: a Byzantine one may propose several,
        # and lines 36 and 49 act on any of them.
        self._proposed: dict[int, dict[bytes, Proposal]] = {}
        self._tallies: dict[tuple[int, VoteKind], _Tally] = {}
        self._done: set[tuple[str, int]] = set()  # "for the first time" rules fired

    # --- inputs -------------------------------------------------------------------------

    def start(self, height: int) -> list[Effect]:
        self._reset_height(height)
        for old in [h for h in self.decisions if h < height - 1]:
            del self.decisions[old]  # one per height: kept, they would grow forever
        return self._start_round(0)

    def on_proposal(self, proposal: Proposal) -> list[Effect]:
        if proposal.height != self.height or proposal.round < 0:
            return []
        if proposal.proposer != self.validators.proposer(proposal.height, proposal.round):
            return []  # only the round's proposer may propose
        proposed = self._proposed.setdefault(proposal.round, {})
        if proposal.value in proposed:
            return []
        proposed[proposal.value] = proposal
        self._proposals.setdefault(proposal.round, proposal)
        return self._evaluate(proposal.round)

    def on_vote(self, vote: Vote) -> list[Effect]:
        power = self.validators.power.get(vote.validator)
        if vote.height != self.height or power is None or vote.round < 0:
            return []
        tally = self._tallies.setdefault((vote.round, vote.kind), _Tally())
        earlier = tally.add(vote, power)
        effects: list[Effect] = [] if earlier is None else [Equivocation(earlier, vote)]
        effects += self._evaluate(vote.round)
        if vote.round < self.round and not any(isinstance(e, Decide) for e in effects):
            # A prevote of an earlier round may complete the proof of lock (line 28) that
            # the current round's proposal refers to.
            effects += self._evaluate(self.round)
        return effects

    def on_timeout(self, kind: TimeoutKind, height: int, round_: int) -> list[Effect]:
        if height != self.height or round_ != self.round:
            return []
        if kind is TimeoutKind.PROPOSE and self.step is Step.PROPOSE:  # line 57
            return self._vote(VoteKind.PREVOTE, NIL, Step.PREVOTE)
        if kind is TimeoutKind.PREVOTE and self.step is Step.PREVOTE:  # line 61
            return self._vote(VoteKind.PRECOMMIT, NIL, Step.PRECOMMIT)
        if kind is TimeoutKind.PRECOMMIT:  # line 65
            return self._start_round(round_ + 1)
        return []

    # --- the algorithm ------------------------------------------------------------------

    def _start_round(self, round_: int) -> list[Effect]:  # line 11
        self.round, self.step = round_, Step.PROPOSE
        proposer = self.validators.proposer(self.height, round_)
        effects: list[Effect] = []
        if self.me is not None and proposer == self.me:
            value = (
                self.valid_value if self.valid_value is not None else self.get_value(self.height)
            )
            proposal = Proposal(self.height, round_, value, self.valid_round, self.me)
            self._proposals.setdefault(round_, proposal)
            self._proposed.setdefault(round_, {})[value] = proposal
            effects.append(Broadcast(proposal))
        else:
            effects.append(self._timeout(TimeoutKind.PROPOSE))
        return effects + self._evaluate(round_)

    def _timeout(self, kind: TimeoutKind) -> ScheduleTimeout:
        seconds = self.timeouts.duration(kind, self.round)
        return ScheduleTimeout(kind, self.height, self.round, seconds)

    def _vote(self, kind: VoteKind, value: bytes | None, step: Step) -> list[Effect]:
        self.step = step
        if self.me is None:
            return []
        vote = Vote(kind, self.height, self.round, value, self.me)
        effects: list[Effect] = [Broadcast(vote)]
        tally = self._tallies.setdefault((self.round, kind), _Tally())
        tally.add(vote, self.validators.power[self.me])
        return effects

    def _tally(self, round_: int, kind: VoteKind) -> _Tally:
        return self._tallies.get((round_, kind)) or _Tally()

    def _first(self, rule: str, round_: int) -> bool:
        if (rule, round_) in self._done:
            return False
        self._done.add((rule, round_))
        return True

    def _evaluate(self, round_: int) -> list[Effect]:
        """Apply every rule the state now enables, until none does."""
        effects: list[Effect] = []
        while True:
            more = self._step_rules(round_)
            if not more:
                return effects
            effects += more
            if any(isinstance(e, Decide) for e in more):
                return effects

    def _step_rules(self, r: int) -> list[Effect]:
        vs = self.validators
        decide = self._decide_rule(r)
        if decide:
            return decide
        # line 55: f+1 of the power is already in a later round: catch up.
        if r > self.round and self._later_round_power(r):
            return self._start_round(r)
        if r != self.round:
            return []
        proposal = self._proposals.get(r)
        prevotes = self._tally(r, VoteKind.PREVOTE)
        if proposal is not None and self.step is Step.PROPOSE:
            v, vr = proposal.value, proposal.valid_round
            if vr == -1:  # line 22
                ok = self.valid(v) and (self.locked_round == -1 or self.locked_value == v)
                return self._vote(VoteKind.PREVOTE, v if ok else NIL, Step.PREVOTE)
            if 0 <= vr < r and vs.over_two_thirds(  # line 28
                self._tally(vr, VoteKind.PREVOTE).power_for.get(v, 0)
            ):
                ok = self.valid(v) and (self.locked_round <= vr or self.locked_value == v)
                return self._vote(VoteKind.PREVOTE, v if ok else NIL, Step.PREVOTE)
        if (
            self.step is Step.PREVOTE
            and vs.over_two_thirds(prevotes.power)
            and self._first("prevote-timeout", r)
        ):  # line 34
            return [self._timeout(TimeoutKind.PREVOTE)]
        backed = self._backed(r, prevotes)
        if (
            backed is not None
            and self.step >= Step.PREVOTE
            and self.valid(backed)
            and self._first("lock", r)
        ):  # line 36
            v = backed
            self.valid_value, self.valid_round = v, r
            if self.step is Step.PREVOTE:
                self.locked_value, self.locked_round = v, r
                return self._vote(VoteKind.PRECOMMIT, v, Step.PRECOMMIT)
        if self.step is Step.PREVOTE and vs.over_two_thirds(prevotes.power_for.get(NIL, 0)):
            return self._vote(VoteKind.PRECOMMIT, NIL, Step.PRECOMMIT)  # line 44
        precommits = self._tally(r, VoteKind.PRECOMMIT)
        if vs.over_two_thirds(precommits.power) and self._first("precommit-timeout", r):
            return [self._timeout(TimeoutKind.PRECOMMIT)]  # line 47
        return []

    def _backed(self, r: int, tally: _Tally) -> bytes | None:
        """A value proposed in round r that more than 2/3 of the power voted for."""
        for value in self._proposed.get(r, {}):
            if self.validators.over_two_thirds(tally.power_for.get(value, 0)):
                return value
        return None

    def _decide_rule(self, r: int) -> list[Effect]:  # line 49
        if self.height in self.decisions:
            return []
        precommits = self._tally(r, VoteKind.PRECOMMIT)
        v = self._backed(r, precommits)
        if v is None or not self.valid(v):
            return []
        commit = tuple(precommits.by_value[v].values())
        decided = self.height
        self.decisions[decided] = v
        return [Decide(decided, r, v, commit)]

    def _later_round_power(self, r: int) -> bool:
        senders: set[bytes] = set()
        for kind in VoteKind:
            senders.update(self._tally(r, kind).votes)
        proposal = self._proposals.get(r)
        if proposal is not None:
            senders.add(proposal.proposer)
        power = sum(self.validators.power[s] for s in senders)
        return self.validators.over_one_third(power)

"""The Tendermint state machine: liveness with honest validators, round changes past a
dead proposer, locks, equivocation evidence, and safety under random schedules with a
Byzantine validator."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from meshchain.core.consensus.tendermint import (
    PROPOSER_TURNS_KEPT,
    Broadcast,
    Decide,
    Effect,
    Equivocation,
    Proposal,
    ScheduleTimeout,
    Step,
    Tendermint,
    TimeoutKind,
    ValidatorSet,
    Vote,
    VoteKind,
)

KEYS = [bytes([n]) * 32 for n in range(1, 5)]


def validators(powers: list[int] | None = None) -> ValidatorSet:
    return ValidatorSet(list(zip(KEYS, powers or [1, 1, 1, 1], strict=False)))


def instance(me: bytes, vs: ValidatorSet) -> Tendermint:
    return Tendermint(vs, me, get_value=lambda h: b"value-of-" + me[:1], valid=lambda v: True)


@dataclass
class Net:
    """Instances wired together: broadcasts delivered in a seeded random order, some
    validators silent, timeouts fired on a virtual clock when nothing is in flight.
    Partial synchrony and gossip as the paper assumes: until `stable_at` (GST) a copy may
    be held back (with chance `delay`) and arrives only then, and a correct validator
    passes on every message the first time it sees it (the node's vote gossip)."""

    nodes: dict[bytes, Tendermint]
    rng: random.Random
    silent: set[bytes] = field(default_factory=set)
    delay: float = 0.0
    stable_at: float = 0.0
    gossips: set[bytes] = field(default_factory=set)  # validators that pass messages on
    queue: list[tuple[bytes, Proposal | Vote]] = field(default_factory=list)
    held: list[tuple[bytes, Proposal | Vote]] = field(default_factory=list)
    timers: list[tuple[float, bytes, ScheduleTimeout]] = field(default_factory=list)
    now: float = 0.0
    decided: dict[bytes, list[Decide]] = field(default_factory=dict)
    evidence: list[Equivocation] = field(default_factory=list)
    seen: set[tuple[bytes, Proposal | Vote]] = field(default_factory=set)

    def relay(self, who: bytes, message: Proposal | Vote) -> None:
        if who in self.silent or (who, message) in self.seen:
            return
        self.seen.add((who, message))
        for other in self.nodes:
            if other != who:
                self.send(other, message)

    def send(self, target: bytes, message: Proposal | Vote) -> None:
        late = self.now < self.stable_at and self.rng.random() < self.delay
        (self.held if late else self.queue).append((target, message))

    def handle(self, who: bytes, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Broadcast) and who not in self.silent:
                for other in self.nodes:
                    if other != who:
                        self.send(other, effect.message)
            elif isinstance(effect, ScheduleTimeout):
                self.timers.append((self.now + effect.seconds, who, effect))
            elif isinstance(effect, Decide):
                self.decided.setdefault(who, []).append(effect)
            elif isinstance(effect, Equivocation):
                self.evidence.append(effect)

    def run(self, steps: int = 20_000) -> None:
        for who, node in self.nodes.items():
            self.handle(who, node.start(0))
        for _ in range(steps):
            if all(k in self.decided for k in self.nodes if k not in self.silent):
                return
            self.timers.sort(key=lambda t: t[0])
            if self.queue:
                who, message = self.queue.pop(self.rng.randrange(len(self.queue)))
                node = self.nodes[who]
                if who in self.gossips:
                    self.relay(who, message)
                if isinstance(message, Proposal):
                    self.handle(who, node.on_proposal(message))
                else:
                    self.handle(who, node.on_vote(message))
            elif self.held and (not self.timers or self.timers[0][0] >= self.stable_at):
                self.now = max(self.now, self.stable_at)  # GST: the held copies arrive
                self.queue, self.held = self.held, []
            elif self.timers:
                at, who, timeout = self.timers.pop(0)
                self.now = max(self.now, at)
                node = self.nodes[who]
                self.handle(who, node.on_timeout(timeout.kind, timeout.height, timeout.round))
            else:
                return


def net(seed: int = 1, **options: object) -> Net:
    vs = validators()
    return Net({key: instance(key, vs) for key in KEYS}, random.Random(seed), **options)  # type: ignore[arg-type]


def test_four_honest_validators_decide_one_value_in_round_zero() -> None:
    network = net()
    network.run()
    decisions = {d.value for ds in network.decided.values() for d in ds}
    assert len(network.decided) == 4
    assert len(decisions) == 1
    decision = network.decided[KEYS[0]][0]
    assert decision.round == 0
    vs = validators()
    assert vs.over_two_thirds(sum(vs.power[v.validator] for v in decision.commit))
    assert all(v.kind is VoteKind.PRECOMMIT and v.value == decision.value for v in decision.commit)


def test_a_dead_proposer_costs_one_round_and_the_others_still_decide() -> None:
    vs = validators()
    dead = vs.proposer(0, 0)
    network = net(silent={dead})
    network.run()
    live = [k for k in KEYS if k != dead]
    assert all(k in network.decided for k in live)
    assert {network.decided[k][0].round for k in live} == {1}
    assert len({network.decided[k][0].value for k in live}) == 1


def test_proposers_rotate_in_proportion_to_power() -> None:
    vs = validators([1, 2, 3, 4])
    turns = [vs.proposer(h, 0) for h in range(100)]
    assert [turns.count(k) for k in KEYS] == [10, 20, 30, 40]
    with pytest.raises(ValueError, match="positive power"):
        ValidatorSet([(KEYS[0], 0)])


def test_a_locked_validator_prevotes_nil_for_another_value_until_shown_a_newer_lock() -> None:
    vs = validators()
    me = next(k for k in KEYS if vs.proposer(0, 0) != k and vs.proposer(0, 1) != k)
    node = instance(me, vs)
    node.start(0)
    a, b = b"A" * 32, b"B" * 32
    node.on_proposal(Proposal(0, 0, a, -1, vs.proposer(0, 0)))
    for key in KEYS:
        if key != me:
            node.on_vote(Vote(VoteKind.PREVOTE, 0, 0, a, key))
    assert (node.locked_value, node.locked_round) == (a, 0)
    node.on_timeout(TimeoutKind.PRECOMMIT, 0, 0)  # no commit in round 0: round 1
    effects = node.on_proposal(Proposal(0, 1, b, -1, vs.proposer(0, 1)))
    [vote] = [e.message for e in effects if isinstance(e, Broadcast)]
    assert isinstance(vote, Vote)
    assert (vote.kind, vote.value) == (VoteKind.PREVOTE, None)
    assert node.step is Step.PREVOTE


def test_two_votes_of_one_validator_in_one_round_are_evidence() -> None:
    vs = validators()
    node = instance(KEYS[0], vs)
    node.start(0)
    first = Vote(VoteKind.PREVOTE, 0, 0, b"A" * 32, KEYS[1])
    second = Vote(VoteKind.PREVOTE, 0, 0, b"B" * 32, KEYS[1])
    node.on_vote(first)
    assert node.on_vote(second) == [Equivocation(first, second)]
    assert node.on_vote(first) == []  # the same vote again is no offence


def byzantine_run(seed: int, validators_count: int, liars_count: int) -> None:
    """`liars_count` of the validators lie (a different value to each peer, in every
    message); messages arrive in random order and, until a random time, some arrive
    only then. Honest validators must all decide, and decide one value."""
    rng = random.Random(seed)
    keys = [bytes([n]) * 32 for n in range(1, validators_count + 1)]
    vs = ValidatorSet([(k, 1) for k in keys])
    liars = set(rng.sample(keys, liars_count))
    honest = [k for k in keys if k not in liars]
    network = Net(
        {k: instance(k, vs) for k in keys},
        rng,
        delay=rng.choice([0.0, 0.1, 0.3]),
        stable_at=rng.uniform(0.0, 30.0),
    )
    network.gossips = set(honest)
    original = network.handle

    def lie(who: bytes, effects: list[Effect]) -> None:
        if who not in liars:
            original(who, effects)
            return
        for effect in effects:
            if not isinstance(effect, Broadcast):
                original(who, [effect])
                continue
            message = effect.message
            for target in honest:
                forged = b"liar-" + bytes([rng.randrange(3)]) * 27
                if isinstance(message, Vote):
                    message = Vote(message.kind, message.height, message.round, forged, who)
                else:
                    message = Proposal(message.height, message.round, forged, -1, who)
                network.send(target, message)

    network.handle = lie  # type: ignore[method-assign]
    network.run(steps=100_000)
    values = {d.value for k in honest for d in network.decided.get(k, [])}
    assert len(values) == 1, f"seed {seed}: honest validators decided {len(values)} values"
    assert all(k in network.decided for k in honest), f"seed {seed}: not all decided"


def test_one_liar_in_four_never_breaks_agreement_over_1000_schedules() -> None:
    for seed in range(1_000):
        byzantine_run(seed, validators_count=4, liars_count=1)


def test_two_liars_in_seven_never_break_agreement_over_300_schedules() -> None:
    for seed in range(300):
        byzantine_run(seed, validators_count=7, liars_count=2)


def test_proposer_turns_forgotten_from_memory_are_recomputed_the_same() -> None:
    powers = [5, 3, 1, 1]
    long_lived = validators(powers)
    late = PROPOSER_TURNS_KEPT * 3 + 7
    expected_late = validators(powers).proposer(late, 0)
    assert long_lived.proposer(late - 2, 2) == expected_late  # turn = height + round
    for turn in (0, 1, PROPOSER_TURNS_KEPT - 1, late - 1):
        assert long_lived.proposer(turn, 0) == validators(powers).proposer(turn, 0)
    counts = [0, 0, 0, 0]
    for turn in range(1000):
        counts[KEYS.index(long_lived.proposer(turn, 0))] += 1
    assert counts == [500, 300, 100, 100]  # in proportion to power

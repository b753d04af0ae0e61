"""BFT in the simulator: an equivocating validator, seeded random partitions, and the
invariants that judge consensus runs.

`equivocate` is a validator that runs the real node but splits the network: every vote
and proposal it signs goes as signed to even-numbered peers, and odd-numbered peers get
a second, conflicting one (a nil vote for a block vote and the reverse, a proposal of
the same block with another timestamp). Honest nodes must never commit conflicting
blocks, and must record the equivocation as evidence in a block.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import msgspec

from meshchain.core.chain.block import Block, block_hash
from meshchain.core.consensus.bft import BftEngine
from meshchain.core.consensus.bftwire import SignedProposal, SignedVote, proposal_sign_hash
from meshchain.core.consensus.tendermint import VoteKind
from meshchain.core.wire.messages import AnyMessage, ProposalMessage, VoteMessage
from meshchain.sim.adversary import ADVERSARIES, Adversary
from meshchain.sim.config import AdversarySpec, PartitionSpec, RandomFaultSpec

if TYPE_CHECKING:
    from meshchain.sim.host import SimHost
    from meshchain.sim.world import World


class Equivocator(Adversary):
    kind = "equivocate"

    def __init__(self, world: World, host: SimHost, spec: AdversarySpec) -> None:
        super().__init__(world, host, spec)
        if world.config.engine != "bft":
            raise ValueError('equivocate needs a BFT chain (workload.engine = "bft")')
        engine = BftEngine(world.genesis)
        key = host.config.validator_key
        if key is None or key.public_key not in engine.index:
            raise ValueError(f"equivocate: node {host.index} is not a validator")
        self.engine = engine
        self.key = key
        self.index = engine.index[key.public_key]
        self._twins: dict[bytes, AnyMessage] = {}  # a signed message's id -> its twin
        self.equivocations = 0

    def on_send(self, host: SimHost, peer: int, message: AnyMessage) -> bool:
        if peer % 2 == 0:
            return True
        twin = self._twin(message)
        if twin is None:
            return True
        self.send_direct(peer, twin)
        return False

    def _twin(self, message: AnyMessage) -> AnyMessage | None:
        if isinstance(message, VoteMessage) and message.vote.validator == self.index:
            key = bytes(message.vote.signature)
            if key not in self._twins:
                self._twins[key] = VoteMessage(self._other_vote(message.vote))
                self.equivocations += 1
            return self._twins[key]
        if isinstance(message, ProposalMessage):
            proposal = message.proposal
            proposer = self.engine.validators.proposer(proposal.height, proposal.round)
            if proposer != self.key.public_key:
                return None
            key = bytes(proposal.signature)
            if key not in self._twins:
                self._twins[key] = ProposalMessage(self._other_proposal(proposal))
                self.equivocations += 1
            return self._twins[key]
        return None

    def _other_vote(self, vote: SignedVote) -> SignedVote:
        value = None if vote.value else self._stand_in_value(vote.height, vote.round)
        return self.engine.sign_vote(self.key, VoteKind(vote.kind), vote.height, vote.round, value)

    def _stand_in_value(self, height: int, round_: int) -> bytes:
        rng = random.Random(f"{height}/{round_}")
        return rng.randbytes(32)

    def _other_proposal(self, proposal: SignedProposal) -> SignedProposal:
        header = proposal.block.header
        other = Block(
            msgspec.structs.replace(header, timestamp_ms=header.timestamp_ms + 1),
            proposal.block.transactions,
        )
        digest = proposal_sign_hash(
            self.engine.chain_id,
            proposal.height,
            proposal.round,
            proposal.valid_round,
            block_hash(other),
        )
        return SignedProposal(
            proposal.height, proposal.round, proposal.valid_round, other, self.key.sign(digest)
        )

    def counters(self) -> dict[str, int]:
        return {"equivocations": self.equivocations}


ADVERSARIES[Equivocator.kind] = Equivocator


def evidence_committed(world: World, final: bool) -> list[str]:
    """At the end, each equivocating validator is named by evidence in the honest chain."""
    if not final:
        return []
    cheats = [a for a in world.adversaries if isinstance(a, Equivocator) and a.equivocations]
    hosts = [host for host in world.honest_online() if host.node is not None]
    if not cheats or not hosts:
        return []
    assert hosts[0].node is not None
    chain = hosts[0].node.chain
    engine = cheats[0].engine
    named: set[int] = set()
    for height in range(1, chain.height + 1):
        header = chain.header(chain.hash_at(height) or b"")
        if header is not None:
            named.update(e.first.validator for e in engine.seal_of(header).evidence)
    return [
        f"no evidence against equivocating validator {cheat.index} was committed"
        for cheat in cheats
        if cheat.index not in named
    ]


class HaltsWithoutQuorum:
    """While a partition leaves no side with more than 2/3 of the voting power, no
    honest node commits a block (one already in flight at the cut excepted)."""

    def __init__(self, partitions: tuple[PartitionSpec, ...], validators: int) -> None:
        self.cuts = [
            p
            for p in partitions
            if all(
                3 * sum(1 for n in group if n < validators) <= 2 * validators for group in p.groups
            )
        ]
        self.at_cut: dict[int, int] = {}

    def __call__(self, world: World, final: bool) -> list[str]:
        now = world.sim.now
        best = max((h.node.chain.height for h in world.honest_online() if h.node), default=0)
        problems = []
        for number, cut in enumerate(self.cuts):
            if cut.start <= now and number not in self.at_cut:
                self.at_cut[number] = best
            elif cut.start <= now < cut.end and best > self.at_cut[number] + 1:
                problems.append(
                    f"blocks committed without a quorum: height {self.at_cut[number]} -> "
                    f"{best} during the partition at t={cut.start:.0f}"
                )
        return problems


def random_partitions(
    spec: RandomFaultSpec, nodes: int, until: float, rng: random.Random
) -> tuple[PartitionSpec, ...]:
    """Seeded partitions: each cuts the nodes into two or three random groups for a
    random while, all healed by `until` (the settle period keeps the network whole)."""
    cuts = []
    for _ in range(spec.partitions):
        length = rng.uniform(0.0, spec.max_partition_seconds)
        start = rng.uniform(0.0, max(0.0, until - length))
        order = list(range(nodes))
        rng.shuffle(order)
        parts = rng.choice((2, 3))
        groups = tuple(tuple(sorted(order[i::parts])) for i in range(parts))
        cuts.append(PartitionSpec(start, start + length, groups))
    return tuple(cuts)

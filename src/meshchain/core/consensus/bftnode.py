"""The node's BFT consensus: the Tendermint state machine with signatures, a
write-ahead log, vote gossip, evidence, and help for peers that fall behind.

`tendermint.py` decides; this module gives it a voice. Proposals carry the whole block
and are checked in full (`ChainState.check_candidate`) before the machine may call them
valid; a block enters the chain only with a commit certificate, by our own decision or
from a peer (`CommitMessage`), so the block tree never holds an undecided block. Every
node follows consensus, validators and observers alike: proposals, votes and evidence
are gossiped to every peer once, after their signatures check out. A peer that reports
an older height gets the committed blocks it lacks, one per status it sends; long gaps
are the sync component's work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshchain.core.chain.block import Block, block_hash
from meshchain.core.consensus.bft import MAX_EVIDENCE_AGE_HEIGHTS, BftEngine
from meshchain.core.consensus.bftevidence import EvidencePool, duplicate
from meshchain.core.consensus.bftwal import (
    ConsensusLog,
    WalProposal,
    WalRecord,
    WalTimeout,
    WalVote,
)
from meshchain.core.consensus.bftwire import (
    COMMIT_CODEC,
    MAX_EVIDENCE_PER_BLOCK,
    SEAL_CODEC,
    BftSeal,
    Commit,
    CommitSig,
    DuplicateVote,
    SignedProposal,
    SignedVote,
    proposal_sign_hash,
)
from meshchain.core.consensus.tendermint import (
    Broadcast,
    Decide,
    Effect,
    Proposal,
    ScheduleTimeout,
    Tendermint,
    TimeoutKind,
    Timeouts,
    Vote,
    VoteKind,
)
from meshchain.core.events import (
    Action,
    DoubleSignRefused,
    EquivocationDetected,
    PeerId,
    ScheduleTimer,
    Send,
    VoteSigned,
)
from meshchain.core.peers.bans import Offence
from meshchain.core.wire.messages import (
    CommitMessage,
    ConsensusStatus,
    EvidenceMessage,
    Message,
    ProposalMessage,
    VoteMessage,
)
from meshchain.errors import DecodeError, ValidationError

if TYPE_CHECKING:
    from meshchain.core.node import Node

COMMIT_META_KEY = "bft/commit"  # the tip's commit certificate, stored with the tip
TIMER_PREFIX = "bft:"  # then the timeout kind: "bft:0" propose, "bft:1", "bft:2"
NEXT_HEIGHT_TIMER = "bft:next"
GOSSIP_TIMER = "bft:gossip"
# Ours: messages for the next height kept until we get there (peers a commit timeout
# ahead of us); a validator set of 100 sends ~200 votes and a proposal per round.
MAX_FUTURE_MESSAGES = 1_000
# Ours: rounds ahead of ours we still track. The proposer rotation is computed turn by
# turn and each tracked round may hold proposals, so an unbounded round from a Byzantine
# validator would cost unbounded work and memory. A node further behind catches up by
# its own timeouts, which are shorter than those of the rounds ahead.
MAX_ROUNDS_AHEAD = 16
# Ours: proposals kept per round. Only the round's proposer may propose; an honest one
# proposes once, so a second proves it Byzantine and further ones only cost memory (a
# per-height cap would let it crowd out the honest proposers of later rounds).
MAX_PROPOSALS_PER_ROUND = 2
# Different values one validator may have signed for one slot that we keep: two prove
# equivocation, more only cost memory; beyond this, only votes for nil or for a proposed
# block are kept (one of those may complete a quorum a proposal refers to).
MAX_VALUES_PER_SLOT = 2
# Ours: a peer we sent a commit for a height gets it again only after this long.
HELP_RESEND_SECONDS = 2.0

VoteKey = tuple[int, int, int, bytes]  # kind, round, validator index, value


class BftConsensus:
    def __init__(self, node: Node) -> None:
        engine = node.engine
        assert isinstance(engine, BftEngine)
        self.node = node
        self.engine = engine
        self.chain = node.chain
        key = node.config.validator_key
        self.key = key if key is not None and key.public_key in engine.index else None
        params = node.config.genesis.consensus
        propose, vote = params.bft_timeout_propose_ms / 1000, params.bft_timeout_vote_ms / 1000
        # CometBFT's deltas are a sixth (propose) and a half (votes) of the base timeouts.
        self.timeouts = Timeouts(propose, propose / 6, vote, vote / 2)
        self.commit_timeout = params.bft_timeout_commit_ms / 1000
        self.gossip_interval = max(vote, 0.2)
        self.machine = Tendermint(
            engine.validators,
            self.key.public_key if self.key else None,
            self._get_value,
            self._valid,
            self.timeouts,
        )
        self.log = ConsensusLog(node.chain.store)
        self.tip_commit = self._stored_commit()
        self.evidence = EvidencePool()
        self._recall_recorded_evidence()
        self._helped: dict[PeerId, tuple[int, float]] = {}
        self._timeouts: dict[TimeoutKind, tuple[int, int]] = {}  # kind -> height, round
        self._now = 0.0
        self._last_tick = (-1, -1)
        self._reset_height()

    def _reset_height(self) -> None:
        self.blocks: dict[bytes, Block] = {}
        self._round_proposals: dict[int, int] = {}  # round -> proposals taken
        self._valid_cache: dict[bytes, bool] = {}
        self._proposals: dict[tuple[int, bytes], SignedProposal] = {}
        self._votes: dict[VoteKey, SignedVote] = {}
        self._slot_values: dict[tuple[int, int, int], list[bytes]] = {}
        self._own: dict[tuple[int, int], SignedVote | SignedProposal] = {}  # (step, round)
        self._future: list[tuple[PeerId, Message]] = []

    def _recall_recorded_evidence(self) -> None:
        """After a restart: the evidence blocks recorded lately (evidence older than
        MAX_EVIDENCE_AGE_HEIGHTS is refused anyway), so it is never recorded twice."""
        top = self.chain.height
        for height in range(max(1, top - MAX_EVIDENCE_AGE_HEIGHTS), top + 1):
            header = self.chain.header(self.chain.hash_at(height) or b"")
            if header is not None:
                self.evidence.recorded(self.engine.seal_of(header).evidence)

    def _stored_commit(self) -> Commit | None:
        raw = self.chain.store.get_meta(COMMIT_META_KEY)
        if raw is None:
            return None
        try:
            commit = COMMIT_CODEC.decode(raw)
        except DecodeError:
            return None
        return commit if commit.block_hash == self.chain.tip_hash else None

    # --- starting heights ------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """At node start: resume the height being decided from the write-ahead log."""
        self._now = now
        height = self.chain.height + 1
        records = self.log.records(height)
        self._reset_height()
        for record in records:
            self._reload_own(record)
        self.log.enabled = False
        try:
            actions = self._apply(self.machine.start(height), now)
            for record in records:
                actions += self._replay(record, now)
        finally:
            self.log.enabled = True
        self.log.start_height(height)
        return [*actions, ScheduleTimer(GOSSIP_TIMER, now + self.gossip_interval)]

    def _reload_own(self, record: WalRecord) -> None:
        me = self.key.public_key if self.key else None
        if isinstance(record, WalProposal):
            proposal = record.proposal
            self.blocks[block_hash(proposal.block)] = proposal.block
            if self.engine.validators.proposer(proposal.height, proposal.round) == me:
                self._own[(0, proposal.round)] = proposal
        elif isinstance(record, WalVote) and me is not None:
            vote = record.vote
            if self.engine.validator_key(vote.validator) == me:
                self._own[(vote.kind, vote.round)] = vote

    def _replay(self, record: WalRecord, now: float) -> list[Action]:
        if isinstance(record, WalProposal):
            return self._take_proposal(record.proposal, now)
        if isinstance(record, WalVote):
            return self._take_vote(record.vote, now)
        kind = TimeoutKind(record.kind)
        if self._settled():
            return []
        return self._apply(self.machine.on_timeout(kind, record.height, record.round), now)

    def _start_height(self, now: float) -> list[Action]:
        height = self.chain.height + 1
        if self.machine.height == height:
            return []
        self._now = now
        self.log.start_height(height)
        future = self._future
        self.evidence.remember(self.machine.height, self._votes.values())
        self._reset_height()
        actions = self._apply(self.machine.start(height), now)
        actions += self._to_all(self._status(), None)
        for peer, message in future:
            actions += self.node.handle_message(peer, message, now)
        return actions

    def _late_vote(self, peer: PeerId, vote: SignedVote, now: float) -> list[Action]:
        """A vote of a finished height: evidence if it contradicts one we kept."""
        first = self.evidence.late_conflict(vote)
        if first is None:
            return []
        try:
            self.engine.check_vote(vote)
        except ValidationError as error:
            return self._punish(peer, now, f"a bad vote: {error.detail}")
        return self._new_evidence(duplicate(first, vote), None)

    def _status(self) -> ConsensusStatus:
        return ConsensusStatus(self.machine.height, max(self.machine.round, 0))

    # --- the machine's callbacks -----------------------------------------------------

    def _get_value(self, height: int) -> bytes:
        own = self._own.get((0, self.machine.round))
        if isinstance(own, SignedProposal):
            return block_hash(own.block)  # after a restart: the block we proposed before
        node = self.node
        tip_commit = self.tip_commit if self.chain.height > 0 else None
        evidence = self.evidence.for_block(height, MAX_EVIDENCE_PER_BLOCK)
        seal = SEAL_CODEC.encode(BftSeal(tip_commit, evidence))
        candidates = node.block_candidates()
        block, _ = self.chain.build_block(
            candidates, int(self._now * 1000), node.beneficiary, consensus=seal
        )
        value = block_hash(block)
        self.blocks[value] = block
        self._valid_cache[value] = tip_commit is not None or self.chain.height == 0
        return value

    def _valid(self, value: bytes) -> bool:
        known = self._valid_cache.get(value)
        if known is not None:
            return known
        block = self.blocks.get(value)
        if block is None:
            return False
        try:
            self.chain.check_candidate(block, self._now)
            valid = True
        except ValidationError:
            valid = False
        self._valid_cache[value] = valid
        return valid

    # --- effects ---------------------------------------------------------------------

    def _apply(self, effects: list[Effect], now: float) -> list[Action]:
        actions: list[Action] = []
        for effect in effects:
            if isinstance(effect, Broadcast):
                message = effect.message
                if isinstance(message, Proposal):
                    actions += self._sign_proposal(message)
                else:
                    actions += self._sign_vote(message)
            elif isinstance(effect, ScheduleTimeout):
                # One timer per kind: a newer timeout of a kind makes the older moot.
                self._timeouts[effect.kind] = (effect.height, effect.round)
                name = f"{TIMER_PREFIX}{effect.kind.value}"
                actions.append(ScheduleTimer(name, now + effect.seconds))
            elif isinstance(effect, Decide):
                actions += self._decided(effect, now)

        return actions

    def _sign_proposal(self, proposal: Proposal) -> list[Action]:
        assert self.key is not None
        signed = self._own.get((0, proposal.round))
        if signed is None:
            block = self.blocks[proposal.value]
            digest = proposal_sign_hash(
                self.engine.chain_id,
                proposal.height,
                proposal.round,
                proposal.valid_round,
                proposal.value,
            )
            signed = SignedProposal(
                proposal.height, proposal.round, proposal.valid_round, block, self.key.sign(digest)
            )
            self.log.append(proposal.height, WalProposal(signed))  # before it is sent
            self._own[(0, proposal.round)] = signed
            signed_now: list[Action] = [
                VoteSigned(proposal.height, proposal.round, "proposal", proposal.value)
            ]
        elif not isinstance(signed, SignedProposal) or block_hash(signed.block) != proposal.value:
            return [DoubleSignRefused(proposal.height, proposal.round, "proposal")]
        else:
            signed_now = []
        self._proposals[(proposal.round, proposal.value)] = signed
        return signed_now + self._to_all(ProposalMessage(signed), None)

    def _sign_vote(self, vote: Vote) -> list[Action]:
        assert self.key is not None
        value = vote.value or b""
        step = VoteKind(vote.kind).name.lower()
        signed = self._own.get((vote.kind, vote.round))
        if signed is None:
            signed = self.engine.sign_vote(self.key, vote.kind, vote.height, vote.round, vote.value)
            self.log.append(vote.height, WalVote(signed))  # before it is sent
            self._own[(vote.kind, vote.round)] = signed
            signed_now: list[Action] = [VoteSigned(vote.height, vote.round, step, value)]
        elif not isinstance(signed, SignedVote) or signed.value != value:
            return [DoubleSignRefused(vote.height, vote.round, step)]
        else:
            signed_now = []
        self._votes[(signed.kind, signed.round, signed.validator, signed.value)] = signed
        return signed_now + self._to_all(VoteMessage(signed), None)

    def _decided(self, decision: Decide, now: float) -> list[Action]:
        block = self.blocks.get(decision.value)
        if block is None:
            return []
        signatures = []
        for vote in decision.commit:
            index = self.engine.index[vote.validator]
            signed = self._votes.get((VoteKind.PRECOMMIT, decision.round, index, decision.value))
            if signed is not None:
                signatures.append(CommitSig(index, signed.signature))
        signatures.sort(key=lambda sig: sig.validator)
        commit = Commit(decision.height, decision.round, decision.value, signatures)
        return self.commit(block, commit, now, None)

    def commit(self, block: Block, commit: Commit, now: float, peer: PeerId | None) -> list[Action]:
        """Connect a block with its certificate; the next height starts after the commit
        timeout (at once when a peer's commit caught us up)."""
        meta = {COMMIT_META_KEY: COMMIT_CODEC.encode(commit)}
        proposer = self.engine.validators.proposer(commit.height, commit.round)
        ours = peer is None and self.key is not None and proposer == self.key.public_key
        actions = self.node.accept_block(block, now, peer, meta=meta, certified=True, produced=ours)
        if self.chain.tip_hash != commit.block_hash:
            return actions
        self.tip_commit = commit
        due = now + self.commit_timeout if peer is None else now
        return [*actions, ScheduleTimer(NEXT_HEIGHT_TIMER, due)]

    def _equivocation(self, vote: SignedVote, first_value: bytes) -> list[Action]:
        first = self._votes.get((vote.kind, vote.round, vote.validator, first_value))
        if first is None:
            return []
        return self._new_evidence(duplicate(first, vote), None)

    def _new_evidence(self, evidence: DuplicateVote, source: PeerId | None) -> list[Action]:
        if not self.evidence.add(evidence):
            return []
        vote = evidence.first
        validator = self.engine.validator_key(vote.validator) or b""
        notice = EquivocationDetected(validator, vote.height, vote.round, vote.kind)
        return [notice, *self._to_all(EvidenceMessage(evidence), source)]

    # --- messages from peers ----------------------------------------------------------

    def on_proposal(self, peer: PeerId, message: ProposalMessage, now: float) -> list[Action]:
        proposal = message.proposal
        if proposal.height != self.machine.height:
            return self._other_height(peer, message, proposal.height, now)
        value = block_hash(proposal.block)
        if (proposal.round, value) in self._proposals:
            return []
        if proposal.round > max(self.machine.round, 0) + MAX_ROUNDS_AHEAD:
            return []
        if self._round_proposals.get(proposal.round, 0) >= MAX_PROPOSALS_PER_ROUND:
            return []
        proposer = self.engine.validators.proposer(proposal.height, proposal.round)
        digest = proposal_sign_hash(
            self.engine.chain_id, proposal.height, proposal.round, proposal.valid_round, value
        )
        if (
            proposal.block.header.height != proposal.height
            or proposal.valid_round < -1
            or proposal.valid_round >= proposal.round
            or not self.node.verifier.verify(proposer, digest, proposal.signature)
        ):
            return self._punish(peer, now, "a proposal not signed by its round's proposer")
        self.log.append(proposal.height, WalProposal(proposal))
        return self._to_all(message, peer) + self._take_proposal(proposal, now)

    def _settled(self) -> bool:
        """Whether our height is decided: its late messages no longer matter, and the
        machine must not act again (its next proposal would be built on the new tip)."""
        return self.machine.height in self.machine.decisions

    def _take_proposal(self, proposal: SignedProposal, now: float) -> list[Action]:
        value = block_hash(proposal.block)
        self._proposals[(proposal.round, value)] = proposal
        self._round_proposals[proposal.round] = self._round_proposals.get(proposal.round, 0) + 1
        if value not in self.blocks:
            self.blocks[value] = proposal.block
        if self._settled():
            return []
        proposer = self.engine.validators.proposer(proposal.height, proposal.round)
        self._now = now
        return self._apply(
            self.machine.on_proposal(
                Proposal(proposal.height, proposal.round, value, proposal.valid_round, proposer)
            ),
            now,
        )

    def on_vote(self, peer: PeerId, message: VoteMessage, now: float) -> list[Action]:
        vote = message.vote
        if vote.height != self.machine.height:
            return self._other_height(peer, message, vote.height, now)
        if (vote.kind, vote.round, vote.validator, vote.value) in self._votes:
            return []
        if vote.round > max(self.machine.round, 0) + MAX_ROUNDS_AHEAD:
            return []
        values = self._slot_values.get((vote.kind, vote.round, vote.validator), [])
        if len(values) >= MAX_VALUES_PER_SLOT and vote.value and vote.value not in self.blocks:
            return []  # a flood of values from an equivocator: only proposed ones count
        try:
            self.engine.check_vote(vote)
        except ValidationError as error:
            return self._punish(peer, now, f"a bad vote: {error.detail}")
        self.log.append(vote.height, WalVote(vote))
        # The first vote of a slot is relayed; a second, different one is evidence and
        # travels as evidence.
        relay = self._to_all(message, peer) if not values else []
        return relay + self._take_vote(vote, now)

    def _take_vote(self, vote: SignedVote, now: float) -> list[Action]:
        self._votes[(vote.kind, vote.round, vote.validator, vote.value)] = vote
        values = self._slot_values.setdefault((vote.kind, vote.round, vote.validator), [])
        values.append(vote.value)
        # Equivocation is judged here, not by the machine, which stops listening once
        # the height is decided (and a conflicting vote often arrives after that).
        actions = [] if len(values) < 2 else self._equivocation(vote, values[0])
        if self._settled():
            return actions
        validator = self.engine.validator_key(vote.validator)
        assert validator is not None
        self._now = now
        effects = self.machine.on_vote(
            Vote(VoteKind(vote.kind), vote.height, vote.round, vote.value or None, validator)
        )
        return actions + self._apply(effects, now)

    def _other_height(
        self, peer: PeerId, message: Message, height: int, now: float
    ) -> list[Action]:
        if height > self.machine.height:
            if height == self.machine.height + 1 and len(self._future) < MAX_FUTURE_MESSAGES:
                self._future.append((peer, message))
            return []
        late = self._late_vote(peer, message.vote, now) if isinstance(message, VoteMessage) else []
        return late + self._help(peer, height, now)

    def on_status(self, peer: PeerId, message: ConsensusStatus, now: float) -> list[Action]:
        if message.height < self.machine.height:
            return self._help(peer, message.height, now)
        if message.height > self.chain.height + 2:
            # It has committed blocks beyond our next one: a gap for headers-first sync
            # (its newest block comes by commit, as sync leaves the newest alone).
            return self.node.sync.peer_claims(peer, message.height - 1, now)
        return []

    def _help(self, peer: PeerId, height: int, now: float) -> list[Action]:
        """Send a peer deciding an old height the block committed there, with its proof."""
        if height < 1 or height > self.chain.height:
            return []
        helped = self._helped.get(peer)
        if helped is not None and helped[0] == height and now < helped[1] + HELP_RESEND_SECONDS:
            return []
        block_hash_ = self.chain.hash_at(height)
        block = self.chain.block(block_hash_) if block_hash_ is not None else None
        commit = self.commit_for(height)
        if block is None or commit is None:
            return []
        self._helped[peer] = (height, now)
        return [Send(peer, CommitMessage(block, commit))]

    def commit_for(self, height: int) -> Commit | None:
        """The certificate of our block at `height`: in its child's seal, or kept aside
        for the tip."""
        if height == self.chain.height:
            return self.tip_commit
        child_hash = self.chain.hash_at(height + 1)
        child = self.chain.header(child_hash) if child_hash is not None else None
        return None if child is None else self.engine.seal_of(child).last_commit

    def on_commit(self, peer: PeerId, message: CommitMessage, now: float) -> list[Action]:
        block, commit = message.block, message.commit
        if block.header.height != self.chain.height + 1:
            return []  # not the next block: an old one, or a gap for sync to fill
        try:
            self.engine.check_commit(commit, block.header.height, block_hash(block))
        except ValidationError as error:
            return self._punish(peer, now, f"a bad commit: {error.detail}")
        return self.commit(block, commit, now, peer)

    def on_evidence(self, peer: PeerId, message: EvidenceMessage, now: float) -> list[Action]:
        evidence = message.evidence
        if self.evidence.known(evidence):
            return []
        if evidence.first.height > self.machine.height:
            return []  # we are behind: it can be judged (and included) once we get there
        try:
            self.engine.check_evidence(evidence, self.machine.height + 1)
        except ValidationError as error:
            return self._punish(peer, now, f"bad evidence: {error.detail}")
        actions = self._new_evidence(evidence, peer)
        if evidence.first.height == self.machine.height:
            # Both votes count (the machine counts an equivocator once per value): one
            # of them may be the vote that completes a quorum here.
            for vote in (evidence.first, evidence.second):
                if (vote.kind, vote.round, vote.validator, vote.value) not in self._votes:
                    self.log.append(vote.height, WalVote(vote))
                    actions += self._take_vote(vote, now)
        return actions

    def _punish(self, peer: PeerId, now: float, what: str) -> list[Action]:
        return self.node.peer_manager.punish(
            peer, Offence.INVALID_CONSENSUS_PROOF, now, f"sent {what}"
        )

    # --- chain, peers and timers -------------------------------------------------------

    def block_connected(self, block: Block) -> None:
        """Evidence a block records is done: never proposed again."""
        self.evidence.recorded(self.engine.seal_of(block.header).evidence)

    def chain_moved(self, now: float) -> list[Action]:
        """Blocks arrived by sync: if they passed the height we were deciding, move on."""
        if self.chain.height >= self.machine.height:
            return [ScheduleTimer(NEXT_HEIGHT_TIMER, now)]
        return []

    def greet(self, peer: PeerId) -> list[Action]:
        return [Send(peer, self._status())]

    def peer_gone(self, peer: PeerId) -> None:
        self._helped.pop(peer, None)
        self._future = [(p, m) for p, m in self._future if p != peer]

    def timer(self, name: str, now: float) -> list[Action] | None:
        if not name.startswith(TIMER_PREFIX):
            return None
        self._now = now
        if name == NEXT_HEIGHT_TIMER:
            return self._start_height(now)
        if name == GOSSIP_TIMER:
            return self._gossip_tick(now)
        kind = TimeoutKind(int(name[len(TIMER_PREFIX) :]))
        height, round_ = self._timeouts.pop(kind, (-1, -1))
        if height != self.machine.height or round_ != self.machine.round or self._settled():
            return []
        self.log.append(height, WalTimeout(kind, height, round_))
        return self._apply(self.machine.on_timeout(kind, height, round_), now)

    def _gossip_tick(self, now: float) -> list[Action]:
        """While a height makes no progress, say where we are and repeat what we signed:
        messages lost on the way, or sent before a peer connected, are sent again."""
        actions: list[Action] = [ScheduleTimer(GOSSIP_TIMER, now + self.gossip_interval)]
        position = (self.machine.height, self.machine.round)
        stuck, self._last_tick = position == self._last_tick, position
        if not stuck:
            return actions
        actions += self._to_all(self._status(), None)
        messages: list[Message] = [
            ProposalMessage(signed) if isinstance(signed, SignedProposal) else VoteMessage(signed)
            for signed in self._own.values()
        ]
        # The prevotes that made our valid value valid (its "proof of lock"): a peer
        # that missed them cannot accept that value when it is proposed again.
        proof_round = self.machine.valid_round
        messages += [
            VoteMessage(vote)
            for (kind, round_, _, value), vote in self._votes.items()
            if kind == VoteKind.PREVOTE
            and round_ == proof_round
            and value == self.machine.valid_value
        ]
        for message in messages:
            actions += self._to_all(message, None)
        return actions

    def _to_all(self, message: Message, source: PeerId | None) -> list[Action]:
        return [Send(peer, message) for peer in self.node.peers if peer != source]

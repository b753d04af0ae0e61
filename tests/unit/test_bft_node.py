"""BFT consensus in real nodes: commits with certificates, crashes, the write-ahead log,
bad votes, evidence and catch-up (tests/unit/bftkit.py drives the network)."""

from __future__ import annotations

from bftkit import BftNet

from meshchain.core.chain.block import block_hash
from meshchain.core.consensus.bft import BftEngine
from meshchain.core.consensus.bftevidence import duplicate
from meshchain.core.consensus.bftnode import COMMIT_META_KEY
from meshchain.core.consensus.bftwal import _WAL_CODEC, WalProposal, WalVote
from meshchain.core.consensus.bftwire import COMMIT_CODEC, SEAL_CODEC, BftSeal, Commit, SignedVote
from meshchain.core.consensus.tendermint import VoteKind
from meshchain.core.events import (
    DoubleSignRefused,
    EquivocationDetected,
    MessageReceived,
    PeerPunished,
    Send,
)
from meshchain.core.store import WriteBatch
from meshchain.core.wire.messages import (
    BlockMessage,
    CommitMessage,
    EvidenceMessage,
    GetBlocks,
    GetHeaders,
    VoteMessage,
)


def engine(net: BftNet) -> BftEngine:
    found = net.node(0).engine
    assert isinstance(found, BftEngine)
    return found


def signed_votes(net: BftNet, index: int) -> dict[tuple[int, int, int], set[bytes]]:
    """Every vote node `index` sent, by (height, round, kind): the values it signed."""
    me = engine(net).index[net.validator_keys[index].public_key]
    seen: dict[tuple[int, int, int], set[bytes]] = {}
    for action in net.actions[index]:
        if isinstance(action, Send) and isinstance(action.message, VoteMessage):
            vote = action.message.vote
            if vote.validator == me:
                seen.setdefault((vote.height, vote.round, vote.kind), set()).add(vote.value)
    return seen


def test_validators_commit_blocks_each_certified_by_the_next() -> None:
    net = BftNet(validators=4, observers=1)
    net.run_until_height(5, list(range(5)))
    tips = {net.node(i).chain.hash_at(5) for i in range(5)}
    assert len(tips) == 1  # the observer followed the votes to the same chain
    chain = net.node(4).chain
    bft = engine(net)
    for height in range(2, 6):
        header = chain.header(chain.hash_at(height) or b"")
        assert header is not None
        commit = bft.seal_of(header).last_commit
        assert commit is not None
        assert commit.block_hash == chain.hash_at(height - 1)
        bft.check_commit(commit, height - 1, commit.block_hash)  # > 2/3, good signatures
    assert chain.finalized_height == chain.height  # a commit is final at once
    stored = net.stores[4].get_meta(COMMIT_META_KEY)
    assert stored is not None
    tip_commit = COMMIT_CODEC.decode(stored)
    assert tip_commit.block_hash == chain.tip_hash


def test_commits_continue_with_one_of_four_validators_down_and_stop_with_two() -> None:
    net = BftNet(validators=4)
    net.run_until_height(2, [0, 1, 2, 3])
    net.crash(3)
    net.run_until_height(6, [0, 1, 2])
    net.crash(2)
    height = net.node(0).chain.height
    net.run_until(net.now + 60)
    assert net.node(0).chain.height <= height + 1  # at most one block already decided
    assert net.node(0).chain.hash_at(3) == net.node(1).chain.hash_at(3)


def test_a_restarted_validator_never_signs_two_values_for_one_slot() -> None:
    net = BftNet(validators=4)
    net.run_until_height(3, [0, 1, 2, 3])
    # Stop validator 1 right after it signed something at the height being decided.
    while not any(h == net.node(1).chain.height + 1 for h, _ in net.stores[1].wal_records()):
        net.run_until(net.now + 0.005)
    net.crash(1)
    net.run_until(net.now + 5)
    net.start(1)
    for other in (0, 2, 3):
        net.connect(1, other)
    net.run_until_height(net.node(0).chain.height + 4, [0, 1, 2, 3])
    assert all(len(values) == 1 for values in signed_votes(net, 1).values())
    assert net.node(1).chain.tip_hash == net.node(0).chain.hash_at(net.node(1).chain.height)


def test_a_vote_the_log_contradicts_is_refused_not_signed() -> None:
    net = BftNet(validators=4)
    net.run_until_height(2, [0, 1, 2, 3])
    height = net.node(1).chain.height + 1
    while not any(
        isinstance(_WAL_CODEC.decode(raw), WalVote) and _WAL_CODEC.decode(raw).vote.value  # type: ignore[union-attr]
        for h, raw in net.stores[1].wal_records()
        if h == height
    ):
        net.run_until(net.now + 0.005)
    net.crash(1)
    # Lose the proposal from the log (as if it had never been written): replayed, the
    # machine times out and wants to prevote nil where the log says it prevoted a block.
    store = net.stores[1]
    kept = [
        (h, raw)
        for h, raw in store.wal_records()
        if not isinstance(_WAL_CODEC.decode(raw), WalProposal)
    ]
    store.write(WriteBatch(wal_keep_from=10**9))
    store.write(WriteBatch(wal_append=kept))
    net.start(1)
    net.run_until(net.now + 3)
    assert any(isinstance(a, DoubleSignRefused) for a in net.actions[1])
    assert all(len(values) == 1 for values in signed_votes(net, 1).values())


def test_bad_votes_and_commits_are_punished() -> None:
    net = BftNet(validators=4)
    net.run_until_height(2, [0, 1, 2, 3])
    node = net.node(0)
    height = node.bft.machine.height if node.bft else 0
    forged = SignedVote(VoteKind.PREVOTE, height, 0, bytes(32), 1, bytes(64))
    actions = node.handle(MessageReceived("2", VoteMessage(forged), 100), net.now)
    assert any(isinstance(a, PeerPunished) and a.peer == "2" for a in actions)
    outsider = SignedVote(VoteKind.PREVOTE, height, 0, bytes(32), 99, bytes(64))
    actions = node.handle(MessageReceived("3", VoteMessage(outsider), 100), net.now)
    assert any(isinstance(a, PeerPunished) and a.peer == "3" for a in actions)
    # The next block, with a commit that holds too little power.
    assert node.bft is not None
    seal = SEAL_CODEC.encode(BftSeal(node.bft.tip_commit, []))
    block, _ = node.chain.build_block([], int(net.now * 1000), bytes(20), consensus=seal)
    weak = Commit(block.header.height, 0, block_hash(block), [])
    actions = node.handle(MessageReceived("1", CommitMessage(block, weak), 100), net.now)
    assert any(isinstance(a, PeerPunished) and a.peer == "1" for a in actions)
    assert not node.chain.has_block(block_hash(block))


def test_an_uncertified_block_from_a_peer_is_not_connected() -> None:
    net = BftNet(validators=4)
    net.run_until_height(2, [0, 1, 2, 3])
    node = net.node(0)
    proposer = net.node(1)
    block, _ = proposer.chain.build_block([], int(net.now * 1000), bytes(20))
    actions = node.handle(MessageReceived("1", BlockMessage(block), 100), net.now)
    assert actions == []
    assert not node.chain.has_block(block_hash(block))


def test_an_equivocation_is_detected_gossiped_and_committed_as_evidence() -> None:
    net = BftNet(validators=4)
    net.run_until_height(2, [0, 1, 2, 3])
    bft = engine(net)
    cheat = net.validator_keys[3]
    node = net.node(0)
    assert node.bft is not None
    height = node.bft.machine.height
    # Round 5: a slot validator 3 has not voted in honestly yet.
    first = bft.sign_vote(cheat, VoteKind.PREVOTE, height, 5, bytes([1]) * 32)
    second = bft.sign_vote(cheat, VoteKind.PREVOTE, height, 5, bytes([2]) * 32)
    assert node.handle(MessageReceived("3", VoteMessage(first), 100), net.now) != []
    actions = node.handle(MessageReceived("3", VoteMessage(second), 100), net.now)
    assert any(isinstance(a, EquivocationDetected) for a in actions)
    net.run_until_height(height + 3, [0, 1, 2, 3])
    chain = net.node(2).chain
    named = [
        evidence.first.validator
        for h in range(1, chain.height + 1)
        for evidence in bft.seal_of(chain.header(chain.hash_at(h) or b"")).evidence  # type: ignore[arg-type]
    ]
    assert named == [bft.index[cheat.public_key]]  # once, not again in later blocks
    # A validator restarted after that still knows the evidence is recorded: offered
    # it again by a peer, it neither keeps nor gossips it.
    net.crash(2)
    restarted = net.start(2)
    assert restarted.bft is not None
    offered = EvidenceMessage(duplicate(first, second))
    assert restarted.handle(MessageReceived("0", offered, 100), net.now) == []
    assert restarted.bft.evidence.pending == {}


def observer_left_behind(heights: int) -> BftNet:
    """Four validators and an observer, the observer cut off while they commit on."""
    net = BftNet(validators=4, observers=1)
    net.run_until_height(2, list(range(5)))
    for other in range(4):
        net.disconnect(4, other)
    net.run_until_height(heights, [0, 1, 2, 3])
    return net


def test_a_node_cut_off_for_several_heights_catches_up_by_commits() -> None:
    net = observer_left_behind(8)
    assert net.node(4).chain.height <= 3
    for other in range(4):
        net.connect(4, other)
    net.run_until_height(net.node(0).chain.height, [4])
    assert net.node(4).chain.tip_hash == net.node(0).chain.hash_at(net.node(4).chain.height)


def test_a_node_far_behind_syncs_certified_blocks_headers_first_then_follows() -> None:
    net = observer_left_behind(40)
    start = len(net.actions[4])
    for other in range(4):
        net.connect(4, other)
    net.run_until_height(net.node(0).chain.height + 2, [4])
    sent = [a.message for a in net.actions[4][start:] if isinstance(a, Send)]
    assert any(isinstance(m, GetHeaders) for m in sent)
    fetched = sum(len(m.hashes) for m in sent if isinstance(m, GetBlocks))
    assert fetched >= 30  # the gap came by sync, not one commit at a time
    chain = net.node(4).chain
    assert chain.tip_hash == net.node(0).chain.hash_at(chain.height)

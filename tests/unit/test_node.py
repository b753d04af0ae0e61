"""The sans-IO node: inputs in, actions out, no event loop and no clock but `now`.

These run the `flood` relay baseline, whose relay is one Send per peer; announce-then-
fetch relay has its own tests (test_relay_node.py and the relay unit tests)."""

from __future__ import annotations

import random
from typing import TypeVar

import msgspec

from meshchain.chainkit import KIT_BLOCK_INTERVAL_MS, ChainKit
from meshchain.core.chain.block import block_hash
from meshchain.core.chain.genesis import chain_id
from meshchain.core.chain.tx import Transaction, compute_txid, verify_transaction
from meshchain.core.crypto.keys import SignatureVerifier
from meshchain.core.events import (
    Action,
    BlockAccepted,
    ChainReorganized,
    Disconnect,
    MessageReceived,
    NodeStarted,
    PeerConnected,
    ScheduleTimer,
    Send,
    TimerFired,
    TransactionAccepted,
    TransactionRejected,
    TransactionSubmitted,
)
from meshchain.core.node import (
    EXPIRE_TIMER,
    PRODUCE_TIMER,
    Node,
    NodeConfig,
)
from meshchain.core.peers.manager import DIAL_TIMER, FEELER_TIMER, SAVE_TIMER
from meshchain.core.relay.config import RelayConfig, RelayMode
from meshchain.core.store import MemoryStore
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import (
    BlockMessage,
    GetBlock,
    GetBlocks,
    GetHeaders,
    Headers,
    SyncBlock,
    TransactionMessage,
)
from meshchain.errors import RejectCode

KIT = ChainKit(seed=8, accounts=3)
A = TypeVar("A")
T0 = KIT.genesis.timestamp_ms / 1000


FLOOD = RelayConfig(mode=RelayMode.FLOOD)


def make_node(validator: bool) -> Node:
    config = NodeConfig(KIT.genesis, KIT.authority if validator else None, relay=FLOOD)
    return Node(config, MemoryStore(), random.Random(1))


def transfer(node: Node, nonce: int = 0, amount: int = 5) -> Transaction:
    return KIT.transfer(node.chain.chain_id, 0, 1, amount, 500, nonce)


def of_type(actions: list[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def test_start_arms_the_timers_a_validator_needs() -> None:
    validator = make_node(validator=True).handle(NodeStarted(), T0)
    follower = make_node(validator=False).handle(NodeStarted(), T0)
    peer_timers = {DIAL_TIMER, FEELER_TIMER, SAVE_TIMER}
    validator_timers = {a.timer for a in of_type(validator, ScheduleTimer)}
    assert validator_timers == {PRODUCE_TIMER, EXPIRE_TIMER, *peer_timers}
    assert {a.timer for a in of_type(follower, ScheduleTimer)} == {EXPIRE_TIMER, *peer_timers}
    produce = next(a for a in of_type(validator, ScheduleTimer) if a.timer == PRODUCE_TIMER)
    assert produce.at == T0 + KIT_BLOCK_INTERVAL_MS / 1000


def test_a_submitted_transaction_is_accepted_once_and_relayed() -> None:
    node = make_node(validator=False)
    node.handle(PeerConnected("a", outbound=True), T0)
    node.handle(PeerConnected("b", outbound=False), T0)
    raw = encode(transfer(node))
    actions = node.handle(TransactionSubmitted(raw), T0)
    txid = compute_txid(transfer(node).body)
    assert of_type(actions, TransactionAccepted) == [TransactionAccepted(txid)]
    assert {a.peer for a in of_type(actions, Send)} == {"a", "b"}
    assert txid in node.mempool
    assert node.handle(TransactionSubmitted(raw), T0) == []


def test_bad_submissions_are_rejected_with_a_reason() -> None:
    node = make_node(validator=False)
    garbage = node.handle(TransactionSubmitted(b"\x93\x01\x02"), T0)
    assert [a.code for a in of_type(garbage, TransactionRejected)] == [RejectCode.MALFORMED]
    other = ChainKit(seed=77).genesis
    foreign = KIT.transfer(chain_id(other), 0, 1, 5, 500, 0)
    wrong = node.handle(TransactionSubmitted(encode(foreign)), T0)
    assert [a.code for a in of_type(wrong, TransactionRejected)] == [RejectCode.WRONG_CHAIN]
    assert len(node.mempool) == 0


def test_a_peer_sending_a_forged_signature_is_disconnected() -> None:
    node = make_node(validator=False)
    node.handle(PeerConnected("liar", outbound=False), T0)
    tx = transfer(node)
    forged = msgspec.structs.replace(tx, signature=bytes(64))
    actions = node.handle(MessageReceived("liar", TransactionMessage(forged), 200), T0)
    assert [a.code for a in of_type(actions, TransactionRejected)] == [RejectCode.BAD_SIGNATURE]
    assert [a.peer for a in of_type(actions, Disconnect)] == ["liar"]
    assert of_type(actions, Send) == []


def test_the_validator_produces_a_block_from_its_mempool_and_relays_it() -> None:
    producer, follower = make_node(validator=True), make_node(validator=False)
    producer.handle(PeerConnected("follower", outbound=True), T0)
    for nonce in range(3):
        producer.handle(TransactionSubmitted(encode(transfer(producer, nonce))), T0)
    early = producer.handle(TimerFired(PRODUCE_TIMER), T0 + 0.1)
    assert of_type(early, BlockAccepted) == []  # not yet a block interval after genesis
    actions = producer.handle(TimerFired(PRODUCE_TIMER), T0 + 1.5)
    (accepted,) = of_type(actions, BlockAccepted)
    assert accepted.height == 1
    assert accepted.tx_count == 3
    assert accepted.produced
    assert len(producer.mempool) == 0
    assert any(isinstance(a, ScheduleTimer) and a.timer == PRODUCE_TIMER for a in actions)
    (sent,) = of_type(actions, Send)
    follower.handle(PeerConnected("producer", outbound=False), T0)
    follower.handle(PeerConnected("other", outbound=False), T0)
    relayed = follower.handle(MessageReceived("producer", sent.message, 1_000), T0 + 1.6)
    assert of_type(relayed, BlockAccepted)[0].produced is False
    assert follower.chain.tip_hash == producer.chain.tip_hash
    assert [a.peer for a in of_type(relayed, Send)] == ["other"]  # not back to the source


def test_a_reorg_returns_transactions_to_the_mempool() -> None:
    node = make_node(validator=False)
    node.handle(PeerConnected("p", outbound=True), T0)
    main, rival = KIT.chain(), KIT.chain()
    tx = verify_transaction(transfer(node), SignatureVerifier())
    first = KIT.next_block(main, [tx])
    node.handle(MessageReceived("p", BlockMessage(first), 500), KIT.now_after(first))
    assert tx.txid not in node.mempool
    assert node.chain.height == 1
    branch = []
    for _ in range(2):
        block = KIT.next_block(rival, [], parent_offset_ms=2 * KIT_BLOCK_INTERVAL_MS)
        rival.add_block(block, KIT.now_after(block))
        branch.append(block)
    actions: list[Action] = []
    for block in branch:
        actions += node.handle(MessageReceived("p", BlockMessage(block), 500), KIT.now_after(block))
    (reorg,) = of_type(actions, ChainReorganized)
    assert reorg.disconnected == 1
    assert reorg.connected == 2
    assert node.chain.tip_hash == block_hash(branch[-1])
    assert tx.txid in node.mempool


def deliver(nodes: dict[str, Node], source: str, actions: list[Action], now: float) -> list[type]:
    """Carry `Send`s between in-memory nodes until quiet; the types of what was carried."""
    carried: list[type] = []
    queue = [(source, action) for action in actions]
    while queue and len(carried) < 1_000:
        sender, action = queue.pop(0)
        if isinstance(action, Send) and action.peer in nodes:
            carried.append(type(action.message))
            size = len(encode(action.message))
            replies = nodes[action.peer].handle(MessageReceived(sender, action.message, size), now)
            queue += [(action.peer, reply) for reply in replies]
    return carried


def test_a_node_that_missed_blocks_catches_up_from_a_new_peer() -> None:
    source, late = make_node(validator=False), make_node(validator=False)
    chain = KIT.chain()
    blocks = []
    for _ in range(3):
        block = KIT.next_block(chain, [])
        chain.add_block(block, KIT.now_after(block))
        blocks.append(block)
    now = KIT.now_after(blocks[-1])
    for block in blocks:
        source.handle(MessageReceived("x", BlockMessage(block), 500), now)
    assert source.chain.height == 3
    late.handle(PeerConnected("source", outbound=True), now)
    greeting = source.handle(PeerConnected("late", outbound=False), now)
    assert [type(a.message) for a in of_type(greeting, Send)] == [BlockMessage]
    carried = deliver({"source": source, "late": late}, "source", greeting, now)
    assert late.chain.tip_hash == source.chain.tip_hash
    # The tip is an orphan to it: it asks that peer for headers, then for the two
    # missing blocks at once, and announces its new tip when caught up.
    assert carried == [
        BlockMessage,
        GetHeaders,
        Headers,
        GetBlocks,
        SyncBlock,
        SyncBlock,
        BlockMessage,
    ]


def test_an_orphan_sends_its_sender_one_headers_request_at_a_time() -> None:
    node = make_node(validator=False)
    node.handle(PeerConnected("p", outbound=True), T0)
    node.handle(PeerConnected("q", outbound=True), T0)
    chain = KIT.chain()
    first = KIT.next_block(chain, [])
    chain.add_block(first, KIT.now_after(first))
    second = KIT.next_block(chain, [])
    now = KIT.now_after(second)
    asked = node.handle(MessageReceived("p", BlockMessage(second), 500), now)
    (request,) = [a for a in of_type(asked, Send) if isinstance(a.message, GetHeaders)]
    assert request.peer == "p"
    assert request.message == GetHeaders([node.chain.tip_hash], bytes(32))
    again = node.handle(MessageReceived("q", BlockMessage(second), 500), now + 1)
    assert of_type(again, Send) == []  # a duplicate orphan, and one walk at a time
    unknown = node.handle(MessageReceived("p", GetBlock(bytes(32)), 40), now)
    assert unknown == []  # we do not have it: nothing to send

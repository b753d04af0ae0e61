"""Compact blocks (BIP152-style) and block announcements through `Node.handle`."""

from __future__ import annotations

import pytest
from relaykit import KIT, T0, connect, fire, make_node, of_type, receive, sends, transfer

from meshchain.core.chain.block import Block, block_hash
from meshchain.core.chain.tx import txid_of
from meshchain.core.events import BlockAccepted, ConnectionKind, TransactionSubmitted
from meshchain.core.node import PRODUCE_TIMER, Node
from meshchain.core.relay.blockrelay import BLOCK_FETCH_TIMEOUT, BLOCK_REQUEST_TIMER
from meshchain.core.relay.compact import (
    CompactBlockError,
    PartialBlock,
    compact_block,
    short_id,
    short_id_key,
)
from meshchain.core.relay.config import RelayConfig
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import (
    BlockMessage,
    BlockTxn,
    CompactBlock,
    GetBlockTxn,
    GetData,
    Inventory,
    InvKind,
    NotFound,
    SendCompact,
)

NO_STEM = RelayConfig(dandelion=False)


def producer_with_block(txs: int = 3) -> tuple[Node, Block]:
    """A validator that made a block holding `txs` transactions."""
    node = make_node(NO_STEM, validator=True)
    for nonce in range(txs):
        node.handle(TransactionSubmitted(encode(transfer(node, nonce=nonce))), T0)
    now = T0 + KIT.genesis.consensus.block_interval_ms / 1000
    fire(node, PRODUCE_TIMER, now)
    block = node.chain.block(node.chain.tip_hash)
    assert block is not None
    assert len(block.transactions) == txs
    return node, block


def test_a_compact_block_rebuilds_from_the_mempool_and_asks_for_the_rest() -> None:
    _, block = producer_with_block(4)
    compact = compact_block(block, nonce=7)
    assert len(encode(compact)) < len(encode(block)) / 3
    partial = PartialBlock.rebuild(compact, block.transactions[:3])
    assert partial.missing == [3]
    partial.fill(BlockTxn(block_hash(block), [block.transactions[3]]))
    assert partial.block() == block
    with pytest.raises(CompactBlockError):
        PartialBlock.rebuild(compact, []).fill(BlockTxn(block_hash(block), []))


def test_short_ids_are_salted_per_message_and_collisions_fall_back() -> None:
    _, block = producer_with_block(2)
    txid = txid_of(block.transactions[0])
    key_a = short_id_key(block_hash(block), 1)
    key_b = short_id_key(block_hash(block), 2)
    assert short_id(key_a, txid) != short_id(key_b, txid)
    compact = compact_block(block, 1)
    twin = CompactBlock(compact.header, 1, [compact.short_ids[0]] * 2, [])
    with pytest.raises(CompactBlockError):
        PartialBlock.rebuild(twin, block.transactions)
    swapped = PartialBlock.rebuild(
        CompactBlock(compact.header, 1, compact.short_ids[::-1], []), block.transactions
    )
    with pytest.raises(CompactBlockError):
        swapped.block()  # the right transactions in the wrong order: the root says so


def test_a_new_block_is_announced_and_pushed_whole_to_high_bandwidth_peers() -> None:
    node = make_node(NO_STEM, validator=True)
    connect(node, "low", ConnectionKind.FULL_RELAY)
    connect(node, "high", ConnectionKind.INBOUND)
    receive(node, "high", SendCompact(True))
    node.handle(TransactionSubmitted(encode(transfer(node))), T0)
    made = fire(node, PRODUCE_TIMER, T0 + KIT.genesis.consensus.block_interval_ms / 1000)
    tip = node.chain.tip_hash
    assert sends(made, Inventory) == [("low", Inventory(InvKind.BLOCK, [tip]))]
    [(peer, pushed)] = sends(made, CompactBlock)
    assert peer == "high"
    assert pushed.header == node.chain.tip_header
    served = receive(node, "low", GetData(InvKind.COMPACT_BLOCK, [tip]))
    assert [p for p, _ in sends(served, CompactBlock)] == ["low"]
    full = receive(node, "low", GetData(InvKind.BLOCK, [tip]))
    assert [p for p, _ in sends(full, BlockMessage)] == ["low"]
    missing = receive(node, "low", GetData(InvKind.BLOCK, [bytes(32)]))
    assert sends(missing, NotFound) == [("low", NotFound(InvKind.BLOCK, [bytes(32)]))]


def test_a_receiver_fetches_a_compact_block_and_only_the_transactions_it_lacks() -> None:
    producer, block = producer_with_block(3)
    receiver = make_node(NO_STEM, seed=2)
    connect(receiver, "producer", ConnectionKind.FULL_RELAY)
    for tx in block.transactions[:2]:  # it heard of two of the three
        receiver.handle(TransactionSubmitted(encode(tx)), T0)
    this_hash = block_hash(block)
    asked = receive(receiver, "producer", Inventory(InvKind.BLOCK, [this_hash]))
    assert sends(asked, GetData) == [("producer", GetData(InvKind.COMPACT_BLOCK, [this_hash]))]
    now = KIT.now_after(block)
    compact = compact_block(block, 99)
    wants = receive(receiver, "producer", compact, now)
    assert sends(wants, GetBlockTxn) == [("producer", GetBlockTxn(this_hash, [2]))]
    # The producer answers from its chain.
    [(_, reply)] = sends(receive(producer, "receiver", GetBlockTxn(this_hash, [2]), now), BlockTxn)
    done = receive(receiver, "producer", reply, now)
    assert [a.block_hash for a in of_type(done, BlockAccepted)] == [this_hash]
    # It asks the producer to push compact blocks from now on (BIP152 high bandwidth).
    assert sends(done, SendCompact) == [("producer", SendCompact(True))]
    assert receiver.gossip.block_relay.high_bandwidth_peers() == ["producer"]


def test_a_block_request_that_times_out_goes_to_another_announcer() -> None:
    _, block = producer_with_block(1)
    receiver = make_node(NO_STEM, seed=3)
    connect(receiver, "slow", ConnectionKind.FULL_RELAY)
    connect(receiver, "other", ConnectionKind.FULL_RELAY)
    this_hash = block_hash(block)
    receive(receiver, "slow", Inventory(InvKind.BLOCK, [this_hash]))
    assert receive(receiver, "other", Inventory(InvKind.BLOCK, [this_hash])) == []
    retry = fire(receiver, BLOCK_REQUEST_TIMER, T0 + BLOCK_FETCH_TIMEOUT)
    assert sends(retry, GetData) == [("other", GetData(InvKind.BLOCK, [this_hash]))]
    got = receive(receiver, "other", BlockMessage(block), KIT.now_after(block))
    assert len(of_type(got, BlockAccepted)) == 1

"""Announce-then-fetch relay through `Node.handle`: inventories, requests, trickle
timers, serving rules, and what a misbehaving announcer costs."""

from __future__ import annotations

from relaykit import (
    T0,
    connect,
    fire,
    make_node,
    of_type,
    receive,
    sends,
    timers,
    transfer,
)

from meshchain.core.chain.tx import Transaction, txid_of
from meshchain.core.events import (
    ConnectionKind,
    Disconnect,
    PeerPunished,
    TransactionAccepted,
    TransactionSubmitted,
)
from meshchain.core.node import Node
from meshchain.core.relay.config import RelayConfig, RelayMode
from meshchain.core.relay.txrelay import (
    INBOUND_TRICKLE_TIMER,
    OUTBOUND_TRICKLE_PREFIX,
    REQUEST_TIMER,
    UNSOLICITED_BURST,
)
from meshchain.core.relay.txrequest import TX_REQUEST_TIMEOUT
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import (
    GetData,
    Inventory,
    InvKind,
    NotFound,
    TransactionMessage,
    Transactions,
)

NO_STEM = RelayConfig(dandelion=False)


def node_with_peers() -> Node:
    node = make_node(NO_STEM)
    connect(node, "out1", ConnectionKind.FULL_RELAY)
    connect(node, "out2", ConnectionKind.FULL_RELAY)
    connect(node, "in1", ConnectionKind.INBOUND)
    connect(node, "in2", ConnectionKind.INBOUND)
    connect(node, "blocks", ConnectionKind.BLOCK_RELAY)
    return node


def test_an_announced_transaction_is_fetched_then_trickled_to_the_others() -> None:
    node = node_with_peers()
    tx = transfer(node)
    txid = txid_of(tx)
    asked = receive(node, "out1", Inventory(InvKind.TRANSACTION, [txid]))
    assert sends(asked, GetData) == [("out1", GetData(InvKind.TRANSACTION, [txid]))]
    got = receive(node, "out1", Transactions([tx]), T0 + 0.1)
    assert of_type(got, TransactionAccepted) == [TransactionAccepted(txid)]
    assert sends(got, Inventory) == []  # nothing goes out before a trickle timer fires
    due = timers(got)
    assert set(due) == {OUTBOUND_TRICKLE_PREFIX + "out2", INBOUND_TRICKLE_TIMER}
    outbound = fire(node, OUTBOUND_TRICKLE_PREFIX + "out2", due[OUTBOUND_TRICKLE_PREFIX + "out2"])
    assert sends(outbound, Inventory) == [("out2", Inventory(InvKind.TRANSACTION, [txid]))]
    inbound = fire(node, INBOUND_TRICKLE_TIMER, due[INBOUND_TRICKLE_TIMER])
    assert sorted(peer for peer, _ in sends(inbound, Inventory)) == ["in1", "in2"]
    # Not back to its source, never over the block-relay-only link, and only once.
    assert fire(node, OUTBOUND_TRICKLE_PREFIX + "out1", T0 + 60) == []
    assert sends(fire(node, INBOUND_TRICKLE_TIMER, T0 + 60), Inventory) == []


def test_trickle_timers_are_poisson_with_a_longer_mean_for_inbound_peers() -> None:
    outbound_waits: list[float] = []
    inbound_waits: list[float] = []
    for seed in range(150):
        node = make_node(NO_STEM, seed=seed)
        connect(node, "out", ConnectionKind.FULL_RELAY)
        connect(node, "in", ConnectionKind.INBOUND)
        due = timers(node.handle(TransactionSubmitted(encode(transfer(node))), T0))
        outbound_waits.append(due[OUTBOUND_TRICKLE_PREFIX + "out"] - T0)
        inbound_waits.append(due[INBOUND_TRICKLE_TIMER] - T0)
    out_mean = sum(outbound_waits) / len(outbound_waits)
    in_mean = sum(inbound_waits) / len(inbound_waits)
    assert 1.4 < out_mean < 2.6  # Bitcoin: 2 s outbound
    assert 3.8 < in_mean < 6.2  # and 5 s inbound
    assert len(set(outbound_waits)) == len(outbound_waits)  # random, not a fixed period


def test_get_data_serves_only_what_was_announced_to_that_peer() -> None:
    node = node_with_peers()
    tx = transfer(node)
    txid = txid_of(tx)
    due = timers(node.handle(TransactionSubmitted(encode(tx)), T0))
    probe = receive(node, "in1", GetData(InvKind.TRANSACTION, [txid]), T0 + 0.01)
    assert sends(probe, Transactions) == []
    assert sends(probe, NotFound) == [("in1", NotFound(InvKind.TRANSACTION, [txid]))]
    fire(node, INBOUND_TRICKLE_TIMER, due[INBOUND_TRICKLE_TIMER])
    served = receive(node, "in1", GetData(InvKind.TRANSACTION, [txid]), T0 + 10)
    assert sends(served, Transactions) == [("in1", Transactions([tx]))]


def test_a_request_that_times_out_goes_to_another_announcer() -> None:
    node = node_with_peers()
    tx = transfer(node)
    txid = txid_of(tx)
    receive(node, "out1", Inventory(InvKind.TRANSACTION, [txid]))
    armed = timers(receive(node, "out2", Inventory(InvKind.TRANSACTION, [txid]), T0 + 1))
    assert armed == {}  # out1's request is still in time
    later = fire(node, REQUEST_TIMER, T0 + TX_REQUEST_TIMEOUT)
    assert sends(later, GetData) == [("out2", GetData(InvKind.TRANSACTION, [txid]))]
    assert of_type(receive(node, "out2", Transactions([tx]), T0 + 61), TransactionAccepted)


def test_a_known_or_confirmed_transaction_is_not_requested() -> None:
    node = node_with_peers()
    tx = transfer(node)
    node.handle(TransactionSubmitted(encode(tx)), T0)
    assert receive(node, "out1", Inventory(InvKind.TRANSACTION, [txid_of(tx)])) == []


def test_unsolicited_transactions_past_a_burst_cost_the_connection() -> None:
    node = node_with_peers()
    pushes = [transfer(node, sender=0, nonce=n) for n in range(3)]
    quiet = receive(node, "in1", Transactions(pushes))
    assert of_type(quiet, PeerPunished) == []  # a few: a late answer, say
    punished: list[PeerPunished] = []
    stray = Transactions([pushes[0]])  # already known: charged, never re-validated
    for n in range(int(UNSOLICITED_BURST) + 5):
        actions = receive(node, "in1", stray, T0 + n * 1e-6)
        punished += of_type(actions, PeerPunished)
        if of_type(actions, Disconnect):
            break
    assert [p.offence for p in punished] == ["unrequested_data"]


def test_flood_mode_pushes_whole_transactions_at_once() -> None:
    node = make_node(RelayConfig(mode=RelayMode.FLOOD))
    connect(node, "out", ConnectionKind.FULL_RELAY)
    tx = transfer(node)
    actions = node.handle(TransactionSubmitted(encode(tx)), T0)
    assert sends(actions, TransactionMessage) == [("out", TransactionMessage(tx))]


def test_our_own_transaction_is_announced_to_peers_that_come_later_until_fetched() -> None:
    node = make_node(NO_STEM)
    tx = transfer(node)
    txid = txid_of(tx)
    node.handle(TransactionSubmitted(encode(tx)), T0)  # nobody to tell yet
    due = timers(connect(node, "late", ConnectionKind.FULL_RELAY, T0 + 5))
    told = fire(node, OUTBOUND_TRICKLE_PREFIX + "late", due[OUTBOUND_TRICKLE_PREFIX + "late"])
    assert sends(told, Inventory) == [("late", Inventory(InvKind.TRANSACTION, [txid]))]
    receive(node, "late", GetData(InvKind.TRANSACTION, [txid]), T0 + 8)
    assert timers(connect(node, "later", ConnectionKind.FULL_RELAY, T0 + 9)) == {}


def test_a_transaction_gone_from_the_mempool_before_the_trickle_is_not_announced() -> None:
    node = node_with_peers()
    kept, dropped = transfer(node, sender=0), transfer(node, sender=2)
    due = timers(node.handle(TransactionSubmitted(encode(kept)), T0))
    node.handle(TransactionSubmitted(encode(dropped)), T0)
    node.mempool.remove(txid_of(dropped))  # say, replaced or mined meanwhile
    inbound = fire(node, INBOUND_TRICKLE_TIMER, due[INBOUND_TRICKLE_TIMER])
    assert sends(inbound, Inventory) == [
        ("in1", Inventory(InvKind.TRANSACTION, [txid_of(kept)])),
        ("in2", Inventory(InvKind.TRANSACTION, [txid_of(kept)])),
    ]


def test_peers_that_repeat_an_inventory_as_a_request_share_one_answer() -> None:
    node = node_with_peers()
    txs = [transfer(node, sender=0, nonce=n) for n in range(3)]
    due: dict[str, float] = {}
    for tx in txs:
        due |= timers(node.handle(TransactionSubmitted(encode(tx)), T0))
    inbound = fire(node, INBOUND_TRICKLE_TIMER, due[INBOUND_TRICKLE_TIMER])
    (_, announced), _ = sends(inbound, Inventory)
    ask = GetData(InvKind.TRANSACTION, list(announced.hashes))
    first = sends(receive(node, "in1", ask, T0 + 6), Transactions)
    second = sends(receive(node, "in2", ask, T0 + 6), Transactions)
    assert first == [("in1", Transactions(txs))]
    assert second == [("in2", Transactions(txs))]
    assert first[0][1] is second[0][1]  # built once (and so encoded once)
    node.mempool.remove(txid_of(txs[1]))
    after = receive(node, "in1", ask, T0 + 7)
    assert sends(after, Transactions) == [("in1", Transactions([txs[0], txs[2]]))]
    assert sends(after, NotFound) == [("in1", NotFound(InvKind.TRANSACTION, [txid_of(txs[1])]))]


def test_the_announcement_log_keeps_only_what_some_peer_has_not_read() -> None:
    node = make_node(NO_STEM)
    relay = node.gossip.tx_relay
    ours = [transfer(node, sender=0, nonce=n) for n in range(3)]
    for tx in ours:  # nobody to tell yet: nothing kept in the log for later
        node.handle(TransactionSubmitted(encode(tx)), T0)
    assert relay._log == []
    due = timers(connect(node, "out", ConnectionKind.FULL_RELAY, T0 + 1))  # unbroadcast
    theirs = transfer(node, sender=2)
    receive(node, "out", Transactions([theirs]), T0 + 2)
    assert relay._log == [txid_of(theirs)]  # kept while "out" has not been flushed
    told = fire(node, OUTBOUND_TRICKLE_PREFIX + "out", due[OUTBOUND_TRICKLE_PREFIX + "out"])
    assert sends(told, Inventory) == [("out", Inventory(InvKind.TRANSACTION, ours_ids(ours)))]
    assert relay._log == []
    assert relay.queued("out") == 0
    assert all(relay.known_by("out", t) for t in [*ours_ids(ours), txid_of(theirs)])
    receive(node, "out", Transactions([transfer(node, sender=4)]), T0 + 3)
    assert relay._log == []  # only its source lacks nothing: not even logged for long


def ours_ids(txs: list[Transaction]) -> list[bytes]:
    return [txid_of(tx) for tx in txs]

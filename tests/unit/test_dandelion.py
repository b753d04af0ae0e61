"""Dandelion++ through `Node.handle`: stem routes, the stempool's secrecy, embargoes."""

from __future__ import annotations

from relaykit import KIT, T0, connect, fire, make_node, of_type, receive, sends, timers, transfer

from meshchain.core.chain.tx import Transaction, txid_of
from meshchain.core.events import (
    Action,
    ConnectionKind,
    PeerDisconnected,
    TransactionAccepted,
    TransactionStemmed,
    TransactionSubmitted,
)
from meshchain.core.node import Node
from meshchain.core.relay.config import RelayConfig
from meshchain.core.relay.dandelion import EMBARGO_TIMER, EPOCH_TIMER, STEM_RELAYS
from meshchain.core.relay.txrelay import INBOUND_TRICKLE_TIMER, OUTBOUND_TRICKLE_PREFIX
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import (
    GetData,
    Inventory,
    InvKind,
    NotFound,
    StemTransaction,
    Transactions,
)

OUTBOUND = ["out1", "out2", "out3", "out4"]
RELAY_ONLY = RelayConfig(fluff_probability=0.0)


def stem_node(relay: RelayConfig = RELAY_ONLY, seed: int = 1) -> Node:
    node = make_node(relay, seed=seed)
    for peer in OUTBOUND:
        connect(node, peer, ConnectionKind.FULL_RELAY)
    connect(node, "in1", ConnectionKind.INBOUND)
    connect(node, "in2", ConnectionKind.INBOUND)
    fire(node, EPOCH_TIMER, T0)  # a fresh epoch with every peer there to choose from
    return node


def submit(node: Node, tx: Transaction, now: float = T0) -> list[Action]:
    return node.handle(TransactionSubmitted(encode(tx)), now)


def stem_sends(actions: list[Action]) -> list[str]:
    return [peer for peer, _ in sends(actions, StemTransaction)]


def test_own_transactions_go_to_one_fixed_outbound_relay_and_stay_out_of_the_mempool() -> None:
    node = stem_node()
    txs = [transfer(node, sender=0, nonce=n) for n in range(5)]
    routes = [stem_sends(submit(node, tx)) for tx in txs]
    assert len({tuple(r) for r in routes}) == 1
    assert len(routes[0]) == 1
    assert routes[0][0] in OUTBOUND
    assert node.gossip.dandelion.relays
    assert routes[0][0] in node.gossip.dandelion.relays
    assert len(node.mempool) == 0
    assert len(node.gossip.stempool) == 5
    assert node.next_nonce(KIT.address(0)) == 5  # a wallet still counts them


def test_a_stem_transaction_is_never_announced_or_served_until_it_fluffs() -> None:
    node = stem_node()
    tx = transfer(node)
    txid = txid_of(tx)
    actions = submit(node, tx)
    [relay] = stem_sends(actions)
    assert of_type(actions, TransactionStemmed) == [TransactionStemmed(txid, relay)]
    assert of_type(actions, TransactionAccepted) == []
    for peer in [*OUTBOUND, "in1"]:
        asked = receive(node, peer, GetData(InvKind.TRANSACTION, [txid]), T0 + 1)
        assert sends(asked, Transactions) == []
        assert sends(asked, NotFound) == [(peer, NotFound(InvKind.TRANSACTION, [txid]))]
    for timer in [INBOUND_TRICKLE_TIMER, *(OUTBOUND_TRICKLE_PREFIX + p for p in OUTBOUND)]:
        assert sends(fire(node, timer, T0 + 2), Inventory) == []
    # The embargo runs out and nobody fluffed it: this node does, and announces it.
    deadline = timers(actions)[EMBARGO_TIMER]
    fluffed = fire(node, EMBARGO_TIMER, deadline)
    assert of_type(fluffed, TransactionAccepted) == [TransactionAccepted(txid)]
    assert txid in node.mempool
    assert len(node.gossip.stempool) == 0
    announced = fire(node, INBOUND_TRICKLE_TIMER, deadline + 10)
    assert sorted(p for p, _ in sends(announced, Inventory)) == ["in1", "in2"]


def test_embargo_means_follow_the_configuration() -> None:
    waits = []
    for seed in range(100):
        node = stem_node(RelayConfig(fluff_probability=0.0, embargo_mean=10.0), seed=seed)
        waits.append(timers(submit(node, transfer(node)))[EMBARGO_TIMER] - T0)
    assert 7.0 < sum(waits) / len(waits) < 13.0


def test_a_stem_seen_in_the_fluff_phase_leaves_the_stempool_and_its_embargo() -> None:
    node = stem_node()
    tx = transfer(node)
    txid = txid_of(tx)
    deadline = timers(submit(node, tx))[EMBARGO_TIMER]
    receive(node, "in1", Inventory(InvKind.TRANSACTION, [txid]), T0 + 1)
    got = receive(node, "in1", Transactions([tx]), T0 + 3)  # fetched after its delay
    assert of_type(got, TransactionAccepted) == [TransactionAccepted(txid)]
    assert len(node.gossip.stempool) == 0
    assert of_type(fire(node, EMBARGO_TIMER, deadline), TransactionAccepted) == []


def test_each_stem_source_keeps_one_relay_and_sources_spread_over_both() -> None:
    node = stem_node()
    routes: dict[str, set[str]] = {"in1": set(), "in2": set()}
    for n in range(4):
        for source, sender in (("in1", 1), ("in2", 2)):
            tx = transfer(node, sender=sender, nonce=n)
            routes[source].update(stem_sends(receive(node, source, StemTransaction(tx))))
    assert all(len(relays) == 1 for relays in routes.values())
    assert routes["in1"] != routes["in2"]  # one to one: two sources, two relays
    assert len(node.mempool) == 0


def test_a_diffuser_fluffs_stems_from_peers_but_still_stems_its_own() -> None:
    node = stem_node(RelayConfig(fluff_probability=1.0))
    peer_tx = transfer(node, sender=1)
    fluffed = receive(node, "in1", StemTransaction(peer_tx))
    assert of_type(fluffed, TransactionAccepted) == [TransactionAccepted(txid_of(peer_tx))]
    assert stem_sends(fluffed) == []
    assert len(stem_sends(submit(node, transfer(node, sender=0)))) == 1


def test_diffuser_epochs_come_with_the_fluff_probability() -> None:
    epochs = [stem_node(RelayConfig(), seed=seed).gossip.dandelion for seed in range(400)]
    diffusers = sum(dandelion.diffuser for dandelion in epochs)
    assert 20 <= diffusers <= 65  # q = 0.1 of 400 epochs: 40 expected


def test_a_relay_that_disconnects_is_replaced_at_once() -> None:
    node = stem_node()
    [first] = stem_sends(submit(node, transfer(node, sender=0, nonce=0)))
    node.handle(PeerDisconnected(first, "gone"), T0 + 1)
    dandelion = node.gossip.dandelion
    assert first not in dandelion.relays
    assert len(dandelion.relays) == STEM_RELAYS
    [second] = stem_sends(submit(node, transfer(node, sender=0, nonce=1), T0 + 2))
    assert second != first
    assert second in OUTBOUND


def test_with_no_outbound_peer_a_node_fluffs_its_own_transactions() -> None:
    node = make_node(RELAY_ONLY)
    connect(node, "in1", ConnectionKind.INBOUND)
    actions = submit(node, transfer(node))
    assert stem_sends(actions) == []
    assert len(of_type(actions, TransactionAccepted)) == 1

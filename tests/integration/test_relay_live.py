"""Five real nodes on 127.0.0.1, linked in a line, relay a transaction and a block by
announce-then-fetch (with Dandelion++ and compact blocks) over the secure transport."""

from __future__ import annotations

import itertools

from loops import Runner
from peerkit import Fleet, LiveNode, network, until

from meshchain.core.chain.tx import TxBody, sign_transaction, txid_of
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.events import MessageReceived, TransactionSubmitted
from meshchain.core.relay.config import RelayConfig
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import (
    CompactBlock,
    GetData,
    Inventory,
    StemTransaction,
    Transactions,
)

NODES = 5
# Real relay logic, quicker clocks: trickles and embargoes of a fraction of a second keep
# a four-hop line well inside the test's deadline (the defaults are 2 s, 5 s and 39 s).
QUICK = RelayConfig(outbound_trickle=0.1, inbound_trickle=0.2, embargo_mean=1.0)


def received(live: LiveNode, kind: type) -> int:
    return sum(
        1
        for _, event in live.driver.inputs
        if isinstance(event, MessageReceived) and isinstance(event.message, kind)
    )


def in_chain(live: LiveNode, txid: bytes) -> bool:
    chain = live.node.chain
    for height in range(1, chain.height + 1):
        block_hash = chain.hash_at(height)
        block = chain.block(block_hash) if block_hash is not None else None
        if block is not None and any(txid_of(tx) == txid for tx in block.transactions):
            return True
    return False


def test_five_nodes_in_a_line_relay_a_transaction_and_the_block_that_holds_it(
    run: Runner,
) -> None:
    net = network(NODES, seed=61)

    async def scenario() -> None:
        fleet = Fleet(net)
        try:
            nodes = [await fleet.start(i, validator=i == 0, relay=QUICK) for i in range(NODES)]
            for left, right in itertools.pairwise(nodes):
                await right.dial(left)  # each dials its left neighbour: 4 is 4 hops from 0
            await until(
                lambda: all(a.connected_to(b) for a, b in itertools.pairwise(nodes)),
                "the line to form",
            )
            far = nodes[-1]
            body = TxBody(
                far.node.chain.chain_id,
                net.wallet.public_key,
                address_from_public_key(net.keys[0].public_key),
                amount=7,
                fee=1_000,
                nonce=0,
            )
            tx = sign_transaction(body, net.wallet)
            txid = txid_of(tx)
            far.driver.feed(TransactionSubmitted(encode(tx)))
            await until(lambda: all(in_chain(n, txid) for n in nodes), "the tx in every chain")
            # Not flooded: the middle node fetched it (or was on its stem), and it was
            # announced and asked for along the line.
            middle = nodes[2]
            assert received(middle, Transactions) + received(middle, StemTransaction) >= 1
            assert received(middle, Inventory) >= 1
            assert received(middle, GetData) >= 1
            # The validator's blocks reached the far end as compact blocks.
            assert received(far, CompactBlock) >= 1
        finally:
            await fleet.stop()

    run(scenario)

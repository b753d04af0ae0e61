"""Relay in the simulator: announce-then-fetch with Dandelion++ on the real node core."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from test_world import known_txids, small

from meshchain.core.events import Action, TransactionAccepted
from meshchain.core.relay.config import RelayConfig, RelayMode
from meshchain.core.wire.messages import AnyMessage, StemTransaction
from meshchain.sim.adversary import transaction_ids
from meshchain.sim.config import AdversarySpec, SimConfig
from meshchain.sim.world import World

# Short embargoes so swallowed stems come back within the quiet end of a 62 s run.
STEMS = RelayConfig(embargo_mean=4.0)


def honest_hosts_know_every_transaction(world: World) -> None:
    txids = set(world.metrics.tx_origin)
    assert txids
    for host in world.hosts:
        if host.honest:
            assert txids <= known_txids(host), f"node {host.index} misses some"


def test_every_transaction_reaches_every_node_in_each_relay_mode() -> None:
    for relay in (STEMS, RelayConfig(dandelion=False), RelayConfig(mode=RelayMode.FLOOD)):
        world = World(small(relay=relay), 1)
        world.run()
        honest_hosts_know_every_transaction(world)
        assert world.violations == []


def test_announce_relay_moves_fewer_transaction_bytes_than_flooding() -> None:
    def transaction_bytes(relay: RelayConfig) -> int:
        world = World(small(relay=relay, nodes=24, out_degree=6), 2)
        world.run()
        return sum(row["transaction"] for row in world.metrics.bytes_sent)

    flood = transaction_bytes(RelayConfig(mode=RelayMode.FLOOD))
    announce = transaction_bytes(RelayConfig(dandelion=False))
    assert announce < flood / 3  # each node receives each transaction about once


def watch_stems(config: SimConfig, seed: int) -> tuple[World, list[str]]:
    """Run, recording every way a transaction left a node before its first fluff."""
    world = World(config, seed)
    fluffed: dict[bytes, float] = {}
    leaks: list[str] = []
    stems = 0
    notice = world.metrics.notice

    def on_notice(node: int, action: Action, now: float) -> None:
        if isinstance(action, TransactionAccepted):
            fluffed.setdefault(action.txid, now)
        notice(node, action, now)

    send_many = world.network.send_many

    def on_send(src: int, dsts: Sequence[int], message: AnyMessage, size: int) -> None:
        nonlocal stems
        if isinstance(message, StemTransaction):
            stems += 1
            node = world.hosts[src].node
            assert node is not None
            relays = set(node.gossip.dandelion.relays)
            if not set(map(str, dsts)) <= relays:
                leaks.append(f"stem from {src} to {dsts}, relays {relays}")
        else:
            for txid in transaction_ids(message):
                if txid not in fluffed:
                    leaks.append(f"{type(message).__name__} of a stem from {src}")
        send_many(src, dsts, message, size)

    world.metrics.notice = on_notice  # type: ignore[method-assign]
    world.network.send_many = on_send  # type: ignore[method-assign]
    world.run()
    assert stems > 0
    return world, leaks


def test_a_stem_transaction_goes_only_to_stem_successors_until_it_fluffs() -> None:
    world, leaks = watch_stems(small(relay=STEMS), 3)
    assert leaks == []
    honest_hosts_know_every_transaction(world)


def test_the_embargo_fluffs_what_a_swallowing_stem_successor_keeps() -> None:
    config = small(relay=STEMS, adversaries=(AdversarySpec("silent", (2, 5, 11)),))
    world, leaks = watch_stems(config, 4)
    assert leaks == []
    # The silent nodes were stem successors: stems went in, and nothing came out.
    assert any(world.metrics.bytes_received[node]["stem"] > 0 for node in (2, 5, 11))
    honest_hosts_know_every_transaction(world)  # yet everyone honest got them


def test_without_the_embargo_swallowed_stems_would_be_lost() -> None:
    # The control for the test above: an embargo far past the run's end.
    config = small(
        relay=dataclasses.replace(STEMS, embargo_mean=1e6),
        adversaries=(AdversarySpec("silent", (2, 5, 11)),),
    )
    world = World(config, 4)
    world.run()
    txids = set(world.metrics.tx_origin)
    lost = [h.index for h in world.hosts if h.honest and not txids <= known_txids(h)]
    assert lost

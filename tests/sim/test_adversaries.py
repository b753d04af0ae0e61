"""Adversarial behaviours in small seeded worlds: spy, silent, dropper, crash, and hooks."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from test_world import known_txids

from meshchain.core.relay.config import RelayConfig
from meshchain.core.wire.messages import AnyMessage, Goodbye, Hello, Ping, TransactionMessage
from meshchain.sim.adversary import (
    ADVERSARIES,
    Adversary,
    Dropper,
    Silent,
    Spy,
    transaction_ids,
)
from meshchain.sim.config import AdversarySpec, LatencySpec, PartitionSpec, SimConfig
from meshchain.sim.host import SimHost
from meshchain.sim.world import World


def small(*adversaries: AdversarySpec, **overrides: Any) -> SimConfig:
    base = SimConfig(
        name="adversaries",
        nodes=16,
        out_degree=4,
        duration=62.0,
        settle=20.0,
        latency=LatencySpec("uniform", low_ms=20.0, high_ms=120.0),
        tx_rate=1.0,
        wallets=20,
        block_interval=5.0,
        finality_depth=3,
        adversaries=adversaries,
        # A stem swallowed by a silent or dropping relay is fluffed when its embargo ends;
        # short embargoes let that happen well within the quiet end of a 62 s run.
        relay=RelayConfig(embargo_mean=4.0),
    )
    return dataclasses.replace(base, **overrides)


def sent_by(world: World, node: int) -> int:
    return sum(world.metrics.bytes_sent[node].values())


def test_a_spy_records_when_and_from_whom_it_first_heard_each_transaction() -> None:
    world = World(small(AdversarySpec("spy", (5, 9))), 1)
    heard: dict[int, list[tuple[float, int, bytes]]] = {5: [], 9: []}
    deliver = world.network.deliver

    def watch(dst: int, src: int, message: AnyMessage, size: int) -> None:
        if dst in heard:
            heard[dst].extend((world.sim.now, src, txid) for txid in transaction_ids(message))
        deliver(dst, src, message, size)

    world.network.deliver = watch
    world.run()
    assert [spy.host.index for spy in world.spies] == [5, 9]
    for spy in world.spies:
        assert not spy.host.honest
        # It relays, so it hears of nearly all; a few are mined before gossip reaches it.
        assert set(spy.first_seen) <= set(world.metrics.tx_origin)
        assert len(spy.first_seen) >= 0.9 * len(world.metrics.tx_origin)
        first: dict[bytes, tuple[float, int]] = {}
        for time, src, txid in heard[spy.host.index]:
            first.setdefault(txid, (time, src))
        assert spy.first_seen == first
        for txid, (time, peer) in spy.first_seen.items():
            assert time > world.metrics.tx_origin[txid]
            assert peer in world.neighbours(spy.host.index)
    summary = world.report()["metrics"]["adversaries"]
    assert summary == {
        "spy": {
            "nodes": 2,
            "transactions_seen": len(world.spies[0].first_seen) + len(world.spies[1].first_seen),
            "transactions_seen_by_any": len(
                set(world.spies[0].first_seen) | set(world.spies[1].first_seen)
            ),
        }
    }
    assert world.violations == []


def test_a_silent_node_sends_nothing_yet_everything_reaches_everyone_else() -> None:
    world = World(small(AdversarySpec("silent", (7,))), 1)
    world.run()
    assert sent_by(world, 7) == 0
    assert sum(world.metrics.bytes_received[7].values()) > 0
    silent = world.adversaries[0]
    assert isinstance(silent, Silent)
    assert silent.counters()["messages_dropped"] > 0
    txids = list(world.metrics.tx_origin)
    assert txids
    # Everyone else: the silent node itself cannot even ask for what it is told about.
    honest = [host for host in world.hosts if host.honest]
    for host in honest:
        assert set(txids) <= known_txids(host)
    assert len({h.node.chain.tip_hash for h in honest if h.node}) == 1
    assert world.violations == []


def test_a_dropper_that_always_drops_behaves_exactly_like_a_silent_node() -> None:
    def metrics(spec: AdversarySpec) -> tuple[dict[str, Any], dict[str, Any]]:
        world = World(small(spec), 2)
        world.run()
        report = world.report()["metrics"]
        return report.pop("adversaries"), report

    silent_adversaries, silent = metrics(AdversarySpec("silent", (7,)))
    dropper_adversaries, dropper = metrics(AdversarySpec("dropper", (7,), drop_probability=1.0))
    assert dropper == silent
    assert dropper_adversaries["dropper"] == silent_adversaries["silent"]


def test_a_dropper_drops_about_its_share_of_what_it_sends() -> None:
    world = World(small(AdversarySpec("dropper", (7,), drop_probability=0.5)), 1)
    went_out = 0
    send_many = world.network.send_many

    def count(src: int, dsts: Sequence[int], message: AnyMessage, size: int) -> None:
        nonlocal went_out
        went_out += len(dsts) if src == 7 else 0
        send_many(src, dsts, message, size)

    world.network.send_many = count  # type: ignore[method-assign]
    world.run()
    dropper = world.adversaries[0]
    assert isinstance(dropper, Dropper)
    assert went_out > 100
    total = dropper.dropped + went_out
    # A fair coin per message: within four standard deviations of a half.
    assert abs(dropper.dropped / total - 0.5) < 4 * (0.25 / total) ** 0.5
    assert world.report()["metrics"]["adversaries"] == {
        "dropper": {"messages_dropped": dropper.dropped, "nodes": 1}
    }


def test_a_crash_adversary_is_offline_from_the_start_and_never_returns() -> None:
    world = World(small(AdversarySpec("crash", (12,))), 1)
    world.run()
    host = world.hosts[12]
    assert not host.online
    assert host.starts == 1
    assert not host.connected
    assert sent_by(world, 12) == 0
    assert all(12 not in other.connected for other in world.hosts)
    report = world.report()["metrics"]
    assert report["adversaries"] == {"crash": {"nodes": 1}}
    assert report["propagation_seconds"]["block_to_all_nodes"]["count"] >= 10  # all but it
    assert world.violations == []  # the rest of the network carries on without it


def test_adversarial_hosts_are_not_held_to_convergence() -> None:
    # Node 10 is cut off for the whole run: it never leaves genesis.
    alone = (PartitionSpec(0.0, 1_000.0, ((10,),)),)
    honest = World(small(partitions=alone), 1)
    honest.run()
    assert any("node 10 lags at height 0" in v for v in honest.violations)
    spying = World(small(AdversarySpec("spy", (10,)), partitions=alone), 1)
    spying.run()
    assert spying.hosts[10].node is not None
    assert spying.hosts[10].node.chain.height == 0
    assert spying.violations == []


def test_only_overridden_hooks_are_installed() -> None:
    world = World(small(AdversarySpec("spy", (1,)), AdversarySpec("silent", (2,))), 1)
    spy, silent = world.hosts[1], world.hosts[2]
    assert spy.send_filter is None
    assert spy.on_message is not None
    assert silent.send_filter is not None
    assert silent.on_message is None
    assert world.hosts[3].send_filter is None
    assert world.hosts[3].honest


def test_a_new_behaviour_plugs_in_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    class Pinger(Adversary):
        """Answers every transaction with an unsolicited message on the same session."""

        kind = "pinger"

        def on_receive(self, host: SimHost, src: int, message: AnyMessage) -> None:
            if isinstance(message, TransactionMessage):
                assert self.send_direct(src, Ping(1))

    monkeypatch.setitem(ADVERSARIES, "pinger", Pinger)
    world = World(small(AdversarySpec("pinger", (4,))), 1)
    world.run()
    assert world.metrics.bytes_sent[4]["session"] > 0
    assert world.metrics.bytes_received[4]["session"] > 0  # the session layer answers Pongs
    assert not world.hosts[4].honest
    assert world.report()["metrics"]["adversaries"] == {"pinger": {"nodes": 1}}


@pytest.mark.parametrize("message", [Goodbye(0, "bye"), "hello"])
def test_a_goodbye_or_a_second_hello_ends_the_session_and_it_is_redialled(
    message: Goodbye | str,
) -> None:
    world = World(small(AdversarySpec("spy", (4,)), tx_rate=0.0), 1)
    spy = world.spies[0]
    peer = sorted(world.neighbours(spy.host.index))[0]
    hello = Hello(1, bytes(32), bytes(32), "x:1", 0, 0, bytes(32), "evil/1")
    world.sim.at(20.0, spy.send_direct, peer, message if isinstance(message, Goodbye) else hello)
    seen: list[bool] = []
    world.sim.at(20.5, lambda: seen.append(peer in spy.host.connected))
    world.run()
    assert seen == [False]
    assert peer in spy.host.connected  # whoever dialled redialled


@pytest.mark.parametrize(
    ("specs", "error"),
    [
        ((AdversarySpec("sybil", (1,)),), "unknown adversary kind 'sybil'"),
        ((AdversarySpec("spy", (16,)),), "names node 16"),
        ((AdversarySpec("spy", (3,)), AdversarySpec("silent", (3,))), "two adversarial"),
        ((AdversarySpec("dropper", (3,), drop_probability=1.5),), "not in"),
    ],
)
def test_bad_adversary_specs_are_refused(specs: tuple[AdversarySpec, ...], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        World(small(*specs), 1)


def test_spies_are_the_spy_adversaries() -> None:
    world = World(small(AdversarySpec("spy", (3,)), AdversarySpec("silent", (4,))), 1)
    assert [type(a) for a in world.adversaries] == [Spy, Silent]
    assert world.spies == [world.adversaries[0]]

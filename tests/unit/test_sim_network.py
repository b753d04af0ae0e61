"""The simulated network: latency models, bandwidth queues, loss, partitions, wire sizes."""

from __future__ import annotations

import random
import statistics

import pytest

from meshchain.chainkit import ChainKit
from meshchain.core.chain.block import Block
from meshchain.core.chain.genesis import chain_id
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.transport.identity import new_noise_static_key
from meshchain.core.transport.session import (
    PROTOCOL_VERSION,
    SEAL_FRAME_PLAINTEXT,
    AdmissionPolicy,
    LocalPeer,
    SecureSession,
    SessionState,
)
from meshchain.core.wire.messages import (
    MESSAGE_CODEC,
    AnyMessage,
    BlockMessage,
    Hello,
    Ping,
    TransactionMessage,
)
from meshchain.sim.config import LatencySpec, PartitionSpec
from meshchain.sim.engine import Simulator
from meshchain.sim.network import TCP_GIVE_UP, LatencyModel, Partition, SimNetwork, wire_size

Arrival = tuple[float, int, int, int]  # time, dst, src, ping nonce


def model(spec: LatencySpec, seed: int = 1) -> LatencyModel:
    return LatencyModel(spec, random.Random(seed))


def network(
    latency_ms: float = 100.0, **options: object
) -> tuple[Simulator, SimNetwork, list[Arrival]]:
    sim = Simulator(1)
    net = SimNetwork(
        sim,
        8,
        model(LatencySpec("constant", ms=latency_ms)),
        random.Random(2),
        **options,  # type: ignore[arg-type]
    )
    arrivals: list[Arrival] = []

    def deliver(dst: int, src: int, message: AnyMessage, size: int) -> None:
        assert isinstance(message, Ping)
        arrivals.append((round(sim.now, 9), dst, src, message.nonce))

    net.deliver = deliver
    return sim, net, arrivals


def send_at(sim: Simulator, net: SimNetwork, time: float, src: int, dst: int, n: int) -> None:
    sim.at(time, net.send, src, dst, Ping(n), 100)


# --- latency models ---------------------------------------------------------------------


def test_constant_latency_is_the_same_on_every_link_both_ways() -> None:
    latency = model(LatencySpec("constant", ms=42.0))
    assert {latency(a, b) for a in range(5) for b in range(5) if a != b} == {0.042}


def test_uniform_latency_stays_in_bounds_and_varies() -> None:
    latency = model(LatencySpec("uniform", low_ms=20.0, high_ms=80.0))
    draws = [latency(a, b) for a in range(30) for b in range(a + 1, 30)]
    assert all(0.020 <= d <= 0.080 for d in draws)
    assert max(draws) - min(draws) > 0.05


def test_lognormal_latency_has_the_configured_median() -> None:
    latency = model(LatencySpec("lognormal", median_ms=60.0, sigma=0.5))
    draws = [latency(a, b) for a in range(70) for b in range(a + 1, 70)]
    assert statistics.median(draws) == pytest.approx(0.060, rel=0.08)
    assert max(draws) > 2 * 0.060  # a long right tail, not a constant


def test_region_latency_comes_from_the_matrix_with_nodes_round_robin() -> None:
    matrix = ((10.0, 80.0, 150.0), (80.0, 12.0, 90.0), (150.0, 90.0, 14.0))
    latency = model(LatencySpec("regions", regions=("eu", "us", "asia"), matrix_ms=matrix))
    assert latency(0, 3) == pytest.approx(0.010)  # both eu
    assert latency(1, 4) == pytest.approx(0.012)  # both us
    assert latency(0, 1) == pytest.approx(0.080)
    assert latency(5, 3) == pytest.approx(0.150)  # asia to eu
    assert latency(3, 5) == latency(5, 3)


def test_an_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown latency model"):
        model(LatencySpec("warp"))(0, 1)


def test_each_link_draws_once_so_messages_on_it_keep_their_order() -> None:
    sim = Simulator(1)
    latency = model(LatencySpec("uniform", low_ms=10.0, high_ms=500.0))
    net = SimNetwork(sim, 4, latency, random.Random(2))
    first = latency(0, 1)
    assert all(latency(0, 1) == first == latency(1, 0) for _ in range(10))
    received: list[tuple[float, int]] = []
    net.deliver = lambda dst, src, message, size: received.append(
        (sim.now, message.nonce if isinstance(message, Ping) else -1)
    )
    for n in range(50):
        send_at(sim, net, n * 0.001, 0, 1, n)
    sim.run(10.0)
    assert [n for _, n in received] == list(range(50))
    assert all(t == pytest.approx(n * 0.001 + first) for t, n in received)


# --- bandwidth and queues -----------------------------------------------------------------


def test_serialization_and_queueing_on_both_ends() -> None:
    # 100-byte messages: 0.1 s on an 8 kbit/s uplink, 0.05 s on a 16 kbit/s downlink.
    sim, net, arrivals = network(100.0, upload_bps=8_000, download_bps=16_000)
    send_at(sim, net, 0.0, 0, 1, 1)
    send_at(sim, net, 0.0, 0, 1, 2)  # back to back: waits for the first on the uplink
    sim.run(10.0)
    assert arrivals == [(0.25, 1, 0, 1), (0.35, 1, 0, 2)]  # uplink + latency + downlink


def test_messages_from_two_senders_queue_on_the_receivers_downlink() -> None:
    sim, net, arrivals = network(100.0, download_bps=8_000)  # 0.1 s per message
    send_at(sim, net, 0.0, 0, 2, 1)
    send_at(sim, net, 0.0, 1, 2, 2)
    send_at(sim, net, 5.0, 1, 2, 3)  # the queue has drained by then
    sim.run(10.0)
    assert [time for time, *_ in arrivals] == pytest.approx([0.2, 0.3, 5.2])


def test_unlimited_bandwidth_is_latency_only() -> None:
    sim, net, arrivals = network(30.0)
    for n in range(3):
        send_at(sim, net, 1.0, 0, 1, n)
    sim.run(10.0)
    assert [time for time, *_ in arrivals] == pytest.approx([1.03] * 3)


def fanned_out(batched: bool, options: dict[str, object]) -> list[Arrival]:
    """Arrivals of 40 messages from 5 senders, each to every other of six nodes."""
    sim = Simulator(1)
    latency = model(LatencySpec("lognormal", median_ms=40.0, sigma=0.8))
    net = SimNetwork(sim, 8, latency, random.Random(2), **options)  # type: ignore[arg-type]
    arrivals: list[Arrival] = []

    def deliver(dst: int, src: int, message: AnyMessage, size: int) -> None:
        assert isinstance(message, Ping)
        arrivals.append((sim.now, dst, src, message.nonce))

    def fan_out(src: int, dsts: list[int], n: int) -> None:
        if batched:
            net.send_many(src, dsts, Ping(n), 100 + n)
        else:
            for dst in dsts:
                net.send(src, dst, Ping(n), 100 + n)

    net.deliver = deliver
    for n in range(40):
        src = n % 5
        sim.at(n * 0.013, fan_out, src, [d for d in (4, 0, 2, 1, 3, 5) if d != src], n)
    sim.run(10.0)
    return arrivals


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"upload_bps": 80_000, "download_bps": 50_000},
        {"upload_bps": 1e6, "loss": 0.3},
        {"download_bps": 40_000, "partitions": (PartitionSpec(0.05, 0.5, ((0, 1, 2), (3, 4))),)},
    ],
)
def test_send_many_is_one_send_per_destination(options: dict[str, object]) -> None:
    one_by_one = fanned_out(False, options)
    assert len(one_by_one) > 40
    assert fanned_out(True, options) == one_by_one  # the same floats, in the same order


# --- loss and partitions ------------------------------------------------------------------


def test_loss_drops_about_the_configured_share() -> None:
    sim, net, arrivals = network(10.0, loss=0.2)
    for n in range(5_000):
        send_at(sim, net, 0.0, n % 4, 4 + n % 4, n)
    sim.run(1.0)
    assert len(arrivals) + net.stats.dropped_loss == 5_000
    assert net.stats.dropped_loss / 5_000 == pytest.approx(0.2, abs=0.02)
    assert net.stats.sent == len(arrivals)


def test_a_partition_holds_messages_across_it_and_delivers_them_at_the_heal() -> None:
    groups = ((0, 1), (2, 3))  # node 4 is in neither group: cut from both
    sim, net, arrivals = network(100.0, partitions=(PartitionSpec(1.0, 3.0, groups),))
    send_at(sim, net, 0.5, 0, 2, 1)  # before
    send_at(sim, net, 2.0, 0, 2, 2)  # across, during: held
    send_at(sim, net, 2.0, 0, 1, 3)  # same side, during
    send_at(sim, net, 2.5, 4, 0, 4)  # from outside every group, during: held
    send_at(sim, net, 3.0, 0, 2, 5)  # after the heal (end is exclusive)
    cuts: dict[float, bool] = {}
    for time in (0.9, 1.0, 2.9, 3.0):
        sim.at(time, lambda t=time: cuts.__setitem__(t, net.cut(0, 2)))
    sim.run(10.0)
    assert cuts == {0.9: False, 1.0: True, 2.9: True, 3.0: False}
    assert [(time, n) for time, _, _, n in arrivals] == [
        (0.6, 1),
        (2.1, 3),
        (3.1, 2),  # held, then sent first at the heal: the link keeps order
        (3.1, 4),
        (3.1, 5),
    ]
    assert net.stats.held_partition == 2
    assert net.stats.dropped_partition == 0


def test_a_partition_longer_than_tcp_waits_closes_its_connections() -> None:
    end = 10.0 + TCP_GIVE_UP + 100.0
    sim, net, arrivals = network(100.0, partitions=(PartitionSpec(10.0, end, ((0,), (1,))),))
    severed: list[tuple[float, Partition]] = []
    net.sever = lambda partition: severed.append((sim.now, partition))
    send_at(sim, net, 20.0, 0, 1, 1)  # held, then lost when TCP gives up
    send_at(sim, net, 20.0 + TCP_GIVE_UP, 0, 1, 2)  # after: lost
    send_at(sim, net, end, 0, 1, 3)
    sim.run(end + 10.0)
    assert [(round(time, 6), p.severed) for time, p in severed] == [
        (round(10 + TCP_GIVE_UP, 6), True)
    ]
    assert [n for *_, n in arrivals] == [3]
    assert net.stats.dropped_partition == 2


def test_overlapping_partitions_hold_until_the_last_one_heals() -> None:
    first = PartitionSpec(1.0, 3.0, ((0,), (1,)))
    second = PartitionSpec(2.0, 5.0, ((0,), (1,)))
    sim, net, arrivals = network(100.0, partitions=(first, second))
    send_at(sim, net, 1.5, 0, 1, 1)
    sim.run(10.0)
    assert arrivals == [(5.1, 1, 0, 1)]


# --- what a message costs on the wire -------------------------------------------------------

KIT = ChainKit(seed=5, accounts=2)
CHAIN = chain_id(KIT.genesis)


def open_session_pair() -> tuple[SecureSession, SecureSession]:
    sessions = []
    for initiator in (True, False):
        key = SecretKey.generate(random.Random(int(initiator)))
        hello = Hello(PROTOCOL_VERSION, CHAIN, key.public_key, "sim:1", 0, 0, bytes(32), "t/1")
        local = LocalPeer(key, new_noise_static_key(), hello)
        sessions.append(
            SecureSession(
                local, AdmissionPolicy(CHAIN), initiator=initiator, now=0.0, rng=random.Random(3)
            )
        )
    client, server = sessions
    for _ in range(10):
        to_server, to_client = client.data_to_send(), server.data_to_send()
        if not to_server and not to_client:
            break
        server.receive_data(to_server, 0.0)
        client.receive_data(to_client, 0.0)
    assert client.state is SessionState.OPEN
    return client, server


def test_wire_size_is_the_encoding_plus_record_header_plus_frame_overhead() -> None:
    tx = KIT.transfer(CHAIN, 0, 1, 5, 1, 0)
    small = TransactionMessage(tx)
    assert wire_size(small) == len(MESSAGE_CODEC.encode(small)) + 4 + 18
    chain = KIT.chain()
    txs = [KIT.transfer(chain, 0, 1, 1, 1, n, data=bytes(200)) for n in range(600)]
    big = BlockMessage(Block(KIT.next_block(chain, []).header, txs))
    record = len(MESSAGE_CODEC.encode(big)) + 4
    frames = -(-record // SEAL_FRAME_PLAINTEXT)
    assert frames > 1
    assert wire_size(big) == record + 18 * frames


@pytest.mark.parametrize("kind", ["transaction", "block"])
def test_wire_size_matches_what_a_real_session_writes(kind: str) -> None:
    client, _ = open_session_pair()
    chain = KIT.chain()
    message: AnyMessage
    if kind == "transaction":
        message = TransactionMessage(KIT.transfer(CHAIN, 0, 1, 5, 1, 0))
    else:
        txs = [KIT.transfer(chain, 0, 1, 1, 1, n, data=bytes(200)) for n in range(400)]
        message = BlockMessage(Block(KIT.next_block(chain, []).header, txs))
    client.send(message)
    assert len(client.data_to_send()) == wire_size(message)

"""Links that carry messages, not bytes: latency, bandwidth, loss and partitions.

Encryption is skipped, but each message is charged what the real transport would send:
its canonical encoding, a 4-byte record header, and 18 bytes (length prefix and AEAD tag)
per Noise message of up to 65,519 bytes. A message leaves the sender's uplink after the
uplink's queue drains and its own serialization time, crosses the link's latency, and is
handed over after the receiver's downlink queue and serialization time. Queues are
reserved when a message is sent (a documented simplification of packet scheduling).

Peers talk over TCP, so a partition does not lose what is sent across it: TCP keeps
retransmitting, and the bytes arrive once the partition heals (here: at the heal, not at
TCP's next retransmission timeout). Only a partition that outlasts TCP's patience
(`TCP_GIVE_UP`) closes the connections it cuts, losing whatever was still unsent; the
world then redials. `loss` drops whole messages (a harsher model than TCP's resends).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from meshchain.core.transport.session import (
    AEAD_TAG_SIZE,
    LENGTH_PREFIX_SIZE,
    RECORD_HEADER_SIZE,
    SEAL_FRAME_PLAINTEXT,
)
from meshchain.core.wire.messages import MESSAGE_CODEC, AnyMessage
from meshchain.sim.config import LatencySpec, PartitionSpec
from meshchain.sim.engine import Simulator

Deliver = Callable[[int, int, AnyMessage, int], None]
Receive = Callable[[int, AnyMessage, int], None]  # one node's: source, message, size
# Linux gives up on unacknowledged data after tcp_retries2=15 retransmissions: 924.6 s
# (Documentation/networking/ip-sysctl.rst). Shorter partitions only delay messages.
TCP_GIVE_UP = 924.6


def wire_size(message: AnyMessage) -> int:
    """Bytes the real secure session would put on the wire for this message."""
    record = RECORD_HEADER_SIZE + len(MESSAGE_CODEC.encode(message))
    frames = max(1, math.ceil(record / SEAL_FRAME_PLAINTEXT))
    return record + frames * (LENGTH_PREFIX_SIZE + AEAD_TAG_SIZE)


class LatencyModel:
    """Draws each link's one-way latency (seconds) once, from the scenario's model."""

    def __init__(self, spec: LatencySpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self._links: dict[int, float] = {}

    def region(self, node: int) -> int:
        return node % max(1, len(self.spec.regions))

    def __call__(self, a: int, b: int) -> float:
        key = (a << 32 | b) if a < b else (b << 32 | a)  # an int key: no tuple per message
        latency = self._links.get(key)
        if latency is None:
            latency = self._draw(a, b) / 1000
            self._links[key] = latency
        return latency

    def _draw(self, a: int, b: int) -> float:
        spec, rng = self.spec, self.rng
        if spec.model == "constant":
            return spec.ms
        if spec.model == "uniform":
            return rng.uniform(spec.low_ms, spec.high_ms)
        if spec.model == "lognormal":
            return rng.lognormvariate(math.log(spec.median_ms), spec.sigma)
        if spec.model == "regions":
            return spec.matrix_ms[self.region(a)][self.region(b)]
        raise ValueError(f"unknown latency model {spec.model!r}")


@dataclass
class LinkStats:
    sent: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0  # lost when a partition outlasted TCP and cut connections
    dropped_offline: int = 0
    held_partition: int = 0  # sent across a partition, delivered after it healed


@dataclass
class Partition:
    """One `PartitionSpec` while the run goes: who is where, and what waits for the heal."""

    start: float
    end: float
    groups: dict[int, int]  # node -> group; unlisted nodes share group -1
    severed: bool = False  # TCP gave up: the connections across it are closed
    held: list[tuple[int, int, AnyMessage, int]] = field(default_factory=list)

    def separates(self, a: int, b: int, now: float) -> bool:
        return self.start <= now < self.end and self.groups.get(a, -1) != self.groups.get(b, -1)


class SimNetwork:
    def __init__(
        self,
        sim: Simulator,
        nodes: int,
        latency: LatencyModel,
        rng: random.Random,
        *,
        upload_bps: float | None = None,
        download_bps: float | None = None,
        loss: float = 0.0,
        partitions: tuple[PartitionSpec, ...] = (),
    ) -> None:
        self.sim = sim
        self.latency = latency
        self.rng = rng
        self.loss = loss
        self.upload_bps = upload_bps
        self.download_bps = download_bps
        self.stats = LinkStats()
        self._upload_free = [0.0] * nodes
        self._download_free = [0.0] * nodes
        # Per sender, its links' latencies: one dict probe per message, no key to build.
        self._link_latency: list[dict[int, float]] = [{} for _ in range(nodes)]
        self.partitions = [
            Partition(
                p.start,
                p.end,
                {node: group for group, members in enumerate(p.groups) for node in members},
            )
            for p in partitions
        ]
        # Scheduled now, so at its time a heal runs before anything scheduled later.
        for partition in self.partitions:
            if partition.end - partition.start > TCP_GIVE_UP:
                sim.at(partition.start + TCP_GIVE_UP, self._give_up, partition)
            sim.at(partition.end, self._heal, partition)
        self._deliver: Deliver = lambda dst, src, message, size: None
        self._receivers: list[Receive] | None = None
        # Called when TCP gives up on a partition: close the connections it cuts.
        self.sever: Callable[[Partition], None] = lambda partition: None

    @property
    def deliver(self) -> Deliver:
        """Called as `deliver(dst, src, message, size)` for each arrival."""
        return self._deliver

    @deliver.setter
    def deliver(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._receivers = None  # a new hook (a test's, say) sees every arrival

    def deliver_to(self, receivers: list[Receive]) -> None:
        """Arrivals go straight to `receivers[dst](src, message, size)`.

        The same as a `deliver` that dispatches on `dst`, without that call per message
        (about one event in fifteen is anything but a delivery).
        """
        self._receivers = receivers

    def cutting(self, a: int, b: int) -> Partition | None:
        """The partition separating `a` and `b` now, if any."""
        now = self.sim.now
        for partition in self.partitions:
            if partition.separates(a, b, now):
                return partition
        return None

    def cut(self, a: int, b: int) -> bool:
        """Whether a partition separates `a` and `b` now (a dial across it fails)."""
        return self.cutting(a, b) is not None

    def send(self, src: int, dst: int, message: AnyMessage, size: int) -> None:
        if self.partitions:
            partition = self.cutting(src, dst)
            if partition is not None:
                self._hold(partition, src, dst, message, size)
                return
        if self.loss and self.rng.random() < self.loss:
            self.stats.dropped_loss += 1
            return
        self._transmit(src, dst, message, size)

    def send_many(self, src: int, dsts: Sequence[int], message: AnyMessage, size: int) -> None:
        """`send` to each of `dsts` in turn, the deliveries scheduled as one series.

        The arithmetic is `_transmit`'s, operation for operation (`max` written out), so
        every arrival time is the same float it would be with one `send` per destination.
        """
        now = self.sim.now
        partitions, loss = self.partitions, self.loss
        latency_to = self._link_latency[src]
        upload_bps, download_bps = self.upload_bps, self.download_bps
        upload_time = size * 8 / upload_bps if upload_bps else 0.0
        download_time = size * 8 / download_bps if download_bps else 0.0
        download_free = self._download_free
        upload_free = self._upload_free[src]
        leave = now
        arrivals: list[float] = []
        destinations: list[int] = []
        for dst in dsts:
            if partitions:
                partition = self.cutting(src, dst)
                if partition is not None:
                    self._hold(partition, src, dst, message, size)
                    continue
            if loss and self.rng.random() < loss:
                self.stats.dropped_loss += 1
                continue
            if upload_bps:
                leave = upload_free = (upload_free if upload_free > now else now) + upload_time
            latency = latency_to.get(dst)
            if latency is None:  # drawn by the model on the link's first use, as before
                latency = latency_to[dst] = self.latency(src, dst)
            arrive = leave + latency
            if download_bps:
                busy = download_free[dst]
                arrive = download_free[dst] = (busy if busy > arrive else arrive) + download_time
            arrivals.append(arrive)
            destinations.append(dst)
        self.stats.sent += len(arrivals)
        if upload_bps:
            self._upload_free[src] = upload_free
        direct = self._receivers
        if direct is None:
            arguments = [(dst, src, message, size) for dst in destinations]
            self.sim.at_series(arrivals, self._deliver, arguments)
        else:
            callbacks = [direct[dst] for dst in destinations]
            self.sim.at_series_each(arrivals, callbacks, [(src, message, size)] * len(arrivals))

    def _transmit(self, src: int, dst: int, message: AnyMessage, size: int) -> None:
        """Queue on the uplink, cross the link, queue on the downlink."""
        self.stats.sent += 1
        now = self.sim.now
        leave = now
        if self.upload_bps:
            leave = max(now, self._upload_free[src]) + size * 8 / self.upload_bps
            self._upload_free[src] = leave
        arrive = leave + self.latency(src, dst)
        if self.download_bps:
            arrive = max(arrive, self._download_free[dst]) + size * 8 / self.download_bps
            self._download_free[dst] = arrive
        if self._receivers is None:
            self.sim.at(arrive, self._deliver, dst, src, message, size)
        else:
            self.sim.at(arrive, self._receivers[dst], src, message, size)

    def _hold(
        self, partition: Partition, src: int, dst: int, message: AnyMessage, size: int
    ) -> None:
        if partition.severed:
            self.stats.dropped_partition += 1
        else:
            self.stats.held_partition += 1
            partition.held.append((src, dst, message, size))

    def _heal(self, partition: Partition) -> None:
        """TCP resends what waited, in order; another partition may still hold it."""
        held, partition.held = partition.held, []
        for src, dst, message, size in held:
            other = self.cutting(src, dst)
            if other is not None:
                self._hold(other, src, dst, message, size)
            else:
                self._transmit(src, dst, message, size)

    def _give_up(self, partition: Partition) -> None:
        partition.severed = True
        self.stats.dropped_partition += len(partition.held)
        partition.held = []
        self.sever(partition)

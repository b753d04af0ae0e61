"""Links that carry messages, not bytes: latency, bandwidth, loss and partitions.

Encryption is skipped, but each message is charged what the real transport would send:
its canonical encoding, a 4-byte record header, and 18 bytes (length prefix and AEAD tag)
per Noise message of up to 65,519 bytes. A message leaves the sender's uplink after the
uplink's queue drains and its own serialization time, crosses the link's latency, and is
handed over after the receiver's downlink queue and serialization time. Queues are
reserved when a message is sent (a documented simplification of packet scheduling).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from meshchain.core.transport.session import (
    AEAD_TAG_SIZE,
    LENGTH_PREFIX_SIZE,
    MAX_FRAME_PLAINTEXT,
    RECORD_HEADER_SIZE,
)
from meshchain.core.wire.messages import MESSAGE_CODEC, AnyMessage
from meshchain.sim.config import LatencySpec, PartitionSpec
from meshchain.sim.engine import Simulator

Deliver = Callable[[int, int, AnyMessage, int], None]


def wire_size(message: AnyMessage) -> int:
    """Bytes the real secure session would put on the wire for this message."""
    record = RECORD_HEADER_SIZE + len(MESSAGE_CODEC.encode(message))
    frames = max(1, math.ceil(record / MAX_FRAME_PLAINTEXT))
    return record + frames * (LENGTH_PREFIX_SIZE + AEAD_TAG_SIZE)


class LatencyModel:
    """Draws each link's one-way latency (seconds) once, from the scenario's model."""

    def __init__(self, spec: LatencySpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self._links: dict[tuple[int, int], float] = {}

    def region(self, node: int) -> int:
        return node % max(1, len(self.spec.regions))

    def __call__(self, a: int, b: int) -> float:
        key = (a, b) if a < b else (b, a)
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
    dropped_partition: int = 0
    dropped_offline: int = 0


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
        self._partitions = [
            (
                p.start,
                p.end,
                {node: group for group, members in enumerate(p.groups) for node in members},
            )
            for p in partitions
        ]
        self.deliver: Deliver = lambda dst, src, message, size: None

    def cut(self, a: int, b: int) -> bool:
        """Whether a partition separates `a` and `b` now."""
        now = self.sim.now
        for start, end, groups in self._partitions:
            if start <= now < end and groups.get(a, -1) != groups.get(b, -1):
                return True
        return False

    def send(self, src: int, dst: int, message: AnyMessage, size: int) -> None:
        now = self.sim.now
        if self.cut(src, dst):
            self.stats.dropped_partition += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.stats.dropped_loss += 1
            return
        self.stats.sent += 1
        leave = now
        if self.upload_bps:
            leave = max(now, self._upload_free[src]) + size * 8 / self.upload_bps
            self._upload_free[src] = leave
        arrive = leave + self.latency(src, dst)
        if self.download_bps:
            arrive = max(arrive, self._download_free[dst]) + size * 8 / self.download_bps
            self._download_free[dst] = arrive
        self.sim.at(arrive, self.deliver, dst, src, message, size)

"""A whole simulated network built from a `SimConfig` and a seed, and its report.

Links behave as the runtime's: each host dials the peers it chose (its configured peers)
and, when a session ends for any reason, redials them with the runtime's backoff; a
restarted host dials its own peers at once and the others come back as their redials
fire. Adversarial behaviours (`adversary.py`) are applied to hosts from the config.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from meshchain.cli.setup import COIN, make_genesis
from meshchain.core.chain.genesis import ChainMode, chain_id
from meshchain.core.chain.tx import TxBody, compute_txid, sign_transaction
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import TransactionSubmitted
from meshchain.core.node import NodeConfig
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import AnyMessage
from meshchain.runtime.network import REDIAL_INITIAL_DELAY, REDIAL_MAX_DELAY
from meshchain.sim.adversary import Adversary, Spy, make_adversaries, summarize
from meshchain.sim.config import SimConfig
from meshchain.sim.engine import Simulator, rare_collections
from meshchain.sim.host import CachingVerifier, SimHost
from meshchain.sim.invariants import (
    ChainAdvances,
    NoConflictingFinality,
    converged,
    supply_conserved,
)
from meshchain.sim.metrics import Metrics
from meshchain.sim.network import LatencyModel, Partition, SimNetwork

Invariant = Callable[["World", bool], list[str]]
WALLET_FUNDS = 10_000 * COIN  # a thousand wallets stay within MAX_MONEY
TX_AMOUNT_RANGE = (1, COIN)
TX_FEE_RANGE = (500, 5_000)  # base units; ~170-byte transactions, min relay 1 per byte
INVARIANT_CHECK_INTERVAL = 10.0  # virtual seconds
# Connecting costs a TCP and a Noise handshake: about three one-way trips.
HANDSHAKE_ONE_WAY_TRIPS = 3


class World:
    def __init__(self, config: SimConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.sim = Simulator(seed)
        keys = self.sim.rng("keys")
        self.wallets = [SecretKey.generate(keys) for _ in range(config.wallets)]
        self.authority_keys = [SecretKey.generate(keys) for _ in range(config.authorities)]
        node_keys = [SecretKey.generate(keys) for _ in range(config.nodes)]
        self.genesis = make_genesis(
            ChainMode.PRIVATE,
            chain_name=f"sim-{config.name}"[:64],
            validators=self.authority_keys,
            members=node_keys,
            allocations=[
                (address_from_public_key(w.public_key), WALLET_FUNDS) for w in self.wallets
            ],
            block_interval_ms=int(config.block_interval * 1000),
            timestamp_ms=0,
        )
        self.chain_id = chain_id(self.genesis)
        self.metrics = Metrics(config.nodes)
        self.network = SimNetwork(
            self.sim,
            config.nodes,
            LatencyModel(config.latency, self.sim.rng("latency")),
            self.sim.rng("loss"),
            upload_bps=config.upload_bps,
            download_bps=config.download_bps,
            loss=config.loss,
            partitions=config.partitions,
        )
        self.network.deliver = self._deliver
        self.network.sever = self._sever
        self._dial_tokens: dict[tuple[int, int], int] = {}  # the live dial of each link
        self._backoff: dict[tuple[int, int], float] = {}
        self._redial_rng = self.sim.rng("redial")
        verifier = CachingVerifier()
        self.peer_names = [str(index) for index in range(config.nodes)]
        self.block_pool: dict[bytes, bytes] = {}  # one copy of each block's bytes
        self.hosts = [
            SimHost(
                index,
                self,
                NodeConfig(
                    self.genesis,
                    self.authority_keys[index] if index < config.authorities else None,
                ),
                verifier,
            )
            for index in range(config.nodes)
        ]
        self._build_topology(self.sim.rng("topology"))
        self.adversaries: list[Adversary] = make_adversaries(self, config.adversaries)
        self.invariants: list[Invariant] = [
            NoConflictingFinality(),
            supply_conserved,
            converged,
            ChainAdvances(),
        ]
        self.violations: list[str] = []
        self._workload_rng = self.sim.rng("workload")
        self._nonces: dict[int, int] = {}

    # --- building -------------------------------------------------------------------

    def _build_topology(self, rng: random.Random) -> None:
        count, degree = self.config.nodes, self.config.out_degree
        for host in self.hosts:
            others = [i for i in range(count) if i != host.index]
            for peer in rng.sample(others, min(degree, len(others))):
                if peer in host.links:
                    continue
                host.outbound.add(peer)
                host.links.append(peer)
                self.hosts[peer].links.append(host.index)

    def online(self) -> list[SimHost]:
        return [host for host in self.hosts if host.online]

    def honest_online(self) -> list[SimHost]:
        return [host for host in self.hosts if host.online and host.honest]

    @property
    def spies(self) -> list[Spy]:
        return [adversary for adversary in self.adversaries if isinstance(adversary, Spy)]

    # --- links ----------------------------------------------------------------------

    def connect(self, a: int, b: int) -> None:
        """`a` dials `b` now; the session is up after the TCP and Noise handshakes."""
        if b in self.hosts[a].connected:
            return
        token = self._dial_tokens.get((a, b), 0) + 1
        self._dial_tokens[a, b] = token
        delay = HANDSHAKE_ONE_WAY_TRIPS * self.network.latency(a, b)
        self.sim.after(delay, self._established, a, b, token)

    def _established(self, a: int, b: int, token: int) -> None:
        if self._dial_tokens.get((a, b)) != token:
            return  # a newer dial (after a restart) superseded this one
        first, second = self.hosts[a], self.hosts[b]
        if not first.online or b in first.connected:
            return
        if not second.online or self.network.cut(a, b):
            self._redial(a, b)
            return
        self._backoff.pop((a, b), None)  # it worked: the next redial comes soon
        first.peer_connected(b)
        second.peer_connected(a)

    def _redial(self, a: int, b: int) -> None:
        """Dial a configured peer again later, as the runtime does: 1 s doubling to 60 s."""
        if b not in self.hosts[a].outbound or not self.hosts[a].online:
            return
        delay = self._backoff.get((a, b), REDIAL_INITIAL_DELAY)
        self._backoff[a, b] = min(delay * 2, REDIAL_MAX_DELAY)
        token = self._dial_tokens.get((a, b), 0) + 1
        self._dial_tokens[a, b] = token
        jitter = 0.5 + self._redial_rng.random()
        self.sim.after(delay * jitter, self._redial_due, a, b, token)

    def _redial_due(self, a: int, b: int, token: int) -> None:
        if self._dial_tokens.get((a, b)) == token and self.hosts[a].online:
            self.connect(a, b)

    def disconnect(self, a: int, b: int, reason: str) -> None:
        """Close the session between `a` and `b`; whichever dialled will redial."""
        for here, there in ((a, b), (b, a)):
            host = self.hosts[here]
            if there in host.connected:
                host.peer_disconnected(there, reason)
                self._redial(here, there)

    def _sever(self, partition: Partition) -> None:
        """TCP gave up on a long partition: close every session it cuts."""
        for host in self.hosts:
            for peer in sorted(host.connected):
                if peer > host.index and partition.separates(host.index, peer, self.sim.now):
                    self.disconnect(host.index, peer, "connection timed out (partition)")

    def _deliver(self, dst: int, src: int, message: AnyMessage, size: int) -> None:
        self.hosts[dst].receive(src, message, size)

    # --- workload and faults ----------------------------------------------------------

    @property
    def quiet_from(self) -> float:
        """When the settle period starts: no new transactions or faults after this."""
        return max(0.0, self.config.duration - self.config.settle)

    def _schedule_next_transaction(self) -> None:
        if self.config.tx_rate > 0:
            delay = self._workload_rng.expovariate(self.config.tx_rate)
            if self.sim.now + delay < self.quiet_from:
                self.sim.after(delay, self._submit_transaction)

    def _submit_transaction(self) -> None:
        self._schedule_next_transaction()
        rng = self._workload_rng
        candidates = self.honest_online()
        if not candidates:
            return
        origin = rng.choice(candidates)
        wallet = rng.randrange(len(self.wallets))
        key = self.wallets[wallet]
        address = address_from_public_key(key.public_key)
        assert origin.node is not None
        nonce = max(self._nonces.get(wallet, 0), origin.node.mempool.next_nonce(address))
        recipient = self.wallets[rng.randrange(len(self.wallets))]
        body = TxBody(
            self.chain_id,
            key.public_key,
            address_from_public_key(recipient.public_key),
            rng.randrange(*TX_AMOUNT_RANGE),
            rng.randrange(*TX_FEE_RANGE),
            nonce,
        )
        tx = sign_transaction(body, key, aux_rand=rng.randbytes(32))
        self._nonces[wallet] = nonce + 1
        self.metrics.submitted(compute_txid(body), self.sim.now)
        origin.feed(TransactionSubmitted(encode(tx)))

    def _schedule_faults(self) -> None:
        for crash in self.config.crashes:
            self.sim.at(crash.at, self.hosts[crash.node].stop)
            if crash.restart_at is not None:
                self.sim.at(crash.restart_at, self.hosts[crash.node].start)
        churn = self.config.churn
        if churn is not None:
            self.sim.at(churn.start, self._churn)

    def _churn(self) -> None:
        churn = self.config.churn
        assert churn is not None
        if self.sim.now + churn.downtime > self.quiet_from:
            return
        rng = self.sim.rng(f"churn/{self.sim.now}")
        eligible = [h for h in self.honest_online() if h.index >= self.config.authorities]
        for host in rng.sample(
            eligible, min(len(eligible), round(churn.fraction * len(self.hosts)))
        ):
            host.stop()
            self.sim.after(churn.downtime, host.start)
        self.sim.after(churn.interval, self._churn)

    # --- running ----------------------------------------------------------------------

    def _check(self, final: bool = False) -> None:
        for invariant in self.invariants:
            for problem in invariant(self, final):
                stamped = f"t={self.sim.now:.3f}: {problem}"
                if stamped not in self.violations:
                    self.violations.append(stamped)
        if not final and self.sim.now + INVARIANT_CHECK_INTERVAL <= self.config.duration:
            self.sim.after(INVARIANT_CHECK_INTERVAL, self._check)

    def start(self) -> None:
        for host in self.hosts:
            host.start()
        self._schedule_next_transaction()
        self._schedule_faults()
        self.sim.after(INVARIANT_CHECK_INTERVAL, self._check)

    def run(self, progress: Callable[[float], None] | None = None, step: float = 1.0) -> None:
        with rare_collections():  # see there: a fifth of the run was the GC's
            self.start()
            while self.sim.now < self.config.duration:
                self.sim.run(min(self.config.duration, self.sim.now + step))
                if progress is not None:
                    progress(self.sim.now)
            self._check(final=True)

    def report(self) -> dict[str, Any]:
        heights = [h.node.chain.height for h in self.online() if h.node is not None]
        config = self.config
        return {
            "scenario": {
                "name": config.name,
                "description": config.description,
                "nodes": config.nodes,
                "out_degree": config.out_degree,
                "duration": config.duration,
            },
            "seed": self.seed,
            "metrics": {
                **self.metrics.summary(),
                "network": {
                    "messages_sent": self.network.stats.sent,
                    "dropped_by_loss": self.network.stats.dropped_loss,
                    "dropped_by_partition": self.network.stats.dropped_partition,
                    "held_by_partition": self.network.stats.held_partition,
                    "dropped_at_offline_nodes": self.network.stats.dropped_offline,
                },
                "chain": {
                    "height_min": min(heights, default=0),
                    "height_max": max(heights, default=0),
                    "orphan_blocks_held": sum(
                        h.node.chain.orphan_count for h in self.online() if h.node is not None
                    ),
                },
                "adversaries": summarize(self.adversaries),
                "finality_latency_seconds": None,  # PoA has no finality votes yet
                "simulator": {
                    "events": self.sim.events_processed,
                    "virtual_seconds": config.duration,
                },
            },
            "invariant_violations": self.violations,
        }

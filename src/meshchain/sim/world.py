"""A whole simulated network built from a `SimConfig` and a seed, and its report.

Each host has an IP address and port; its node's peer manager decides whom to dial, as
in a real node. With a static topology each node's chosen neighbours are its persistent
peers (bitcoind -connect), redialled with backoff when a session ends; with discovery a
node starts from the bootstrap nodes and fills its slots from peer exchange. A dial
becomes a session after the TCP and Noise handshakes (about three one-way trips), or a
`DialFailed` when nobody listens there. Adversarial behaviours (`adversary.py`) are
applied to hosts from the config.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from meshchain.cli.setup import COIN, make_genesis
from meshchain.core.chain.genesis import ChainMode, Genesis, chain_id
from meshchain.core.chain.tx import TxBody, compute_txid, sign_transaction, txid_of
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import (
    ConnectionKind,
    Dial,
    DialFailed,
    PeerConnected,
    TransactionSubmitted,
)
from meshchain.core.node import NodeConfig
from meshchain.core.peers.address import GroupPolicy, NetAddress
from meshchain.core.peers.config import PeerConfig, PersistentPeer
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import AnyMessage
from meshchain.runtime.network import DIAL_TIMEOUT
from meshchain.sim.adversary import Adversary, Spy, make_adversaries, summarize
from meshchain.sim.bft import HaltsWithoutQuorum, evidence_committed, random_partitions
from meshchain.sim.config import SimConfig
from meshchain.sim.engine import Simulator, rare_collections
from meshchain.sim.host import CachingVerifier, SimHost
from meshchain.sim.invariants import (
    ChainAdvances,
    NoConflictingFinality,
    converged,
    supply_conserved,
)
from meshchain.sim.metrics import Metrics, percentiles
from meshchain.sim.network import LatencyModel, Partition, SimNetwork
from meshchain.sim.peering import HonestGraphConnected, OutboundTargets, peer_report
from meshchain.sim.propagation import lower_bounds, relay_cost
from meshchain.sim.syncrun import joiner, label, preload, sync_report, sync_topology

Invariant = Callable[["World", bool], list[str]]
WALLET_FUNDS = 10_000 * COIN  # a thousand wallets stay within MAX_MONEY
TX_AMOUNT_RANGE = (1, COIN)
TX_FEE_RANGE = (500, 5_000)  # base units; ~170-byte transactions, min relay 1 per byte
INVARIANT_CHECK_INTERVAL = 10.0  # virtual seconds
# Connecting costs a TCP and a Noise handshake: about three one-way trips; a refused
# connection costs one round trip.
HANDSHAKE_ONE_WAY_TRIPS = 3
REFUSED_ONE_WAY_TRIPS = 2
SIM_PORT = 26656
EPHEMERAL_PORTS = (32768, 60999)  # Linux's default range: the port an inbound peer shows


def sim_genesis(
    config: SimConfig,
    authorities: list[SecretKey],
    node_keys: list[SecretKey],
    wallets: list[SecretKey],
) -> Genesis:
    """A private PoA chain signed by the authorities, a public PoW chain they mine (its
    starting difficulty what their hash rate finds once per block interval), or a
    consortium chain whose validators they are."""
    mode = {"pow": ChainMode.PUBLIC, "bft": ChainMode.CONSORTIUM}.get(
        config.engine, ChainMode.PRIVATE
    )
    return make_genesis(
        mode,
        chain_name=f"sim-{config.name}"[:64],
        validators=authorities,
        members=node_keys,
        allocations=[(address_from_public_key(w.public_key), WALLET_FUNDS) for w in wallets],
        block_interval_ms=int(config.block_interval * 1000),
        timestamp_ms=0,
        pow_difficulty=max(1, round(config.hashrate * config.authorities * config.block_interval)),
        bft_timeouts_ms=tuple(round(seconds * 1000) for seconds in config.bft_timeouts),
    )


class World:
    def __init__(
        self, config: SimConfig, seed: int, topology: list[list[int]] | None = None
    ) -> None:
        self.config = config
        self.seed = seed
        self.sim = Simulator(seed)
        keys = self.sim.rng("keys")
        self.wallets = [SecretKey.generate(keys) for _ in range(config.wallets)]
        self.authority_keys = [SecretKey.generate(keys) for _ in range(config.authorities)]
        total = config.total_nodes  # with the spares that join as replacements
        node_keys = [SecretKey.generate(keys) for _ in range(total)]
        self.node_ids = [key.public_key for key in node_keys]
        self.genesis = sim_genesis(config, self.authority_keys, node_keys, self.wallets)
        self.chain_id = chain_id(self.genesis)
        self.metrics = Metrics(total)
        # The scenario's partitions, and those its seed draws (`[faults.random]`).
        self.partitions = config.partitions + (
            ()
            if config.random_faults is None
            else random_partitions(
                config.random_faults,
                config.nodes,
                max(0.0, config.duration - config.settle),
                self.sim.rng("faults"),
            )
        )
        self.network = SimNetwork(
            self.sim,
            total,
            LatencyModel(config.latency, self.sim.rng("latency")),
            self.sim.rng("loss"),
            upload_bps=config.upload_bps,
            download_bps=config.download_bps,
            loss=config.loss,
            partitions=self.partitions,
        )
        self.network.deliver = self._deliver
        self.network.sever = self._sever
        self._ephemeral = EPHEMERAL_PORTS[0]
        verifier = self.verifier = CachingVerifier()
        self.peer_names = [str(index) for index in range(total)]
        self.block_pool: dict[bytes, bytes] = {}  # one copy of each block's bytes
        self.addresses = [host_address(index, config) for index in range(total)]
        self.by_address = {address: index for index, address in enumerate(self.addresses)}
        # A caller may bring its own static graph (each node's chosen neighbours), as an
        # experiment that reruns one graph with many seeds does (`privacy.py`).
        if topology is None:
            topology = (
                sync_topology(config)
                if config.sync is not None
                else self._static_topology(self.sim.rng("topology"))
            )
        self.topology = [list(chosen) for chosen in topology]
        if len(self.topology) != config.total_nodes:
            raise ValueError(f"the topology names {len(self.topology)} nodes, not {total}")
        persistent = self.topology
        self.hosts = [
            SimHost(
                index,
                self,
                NodeConfig(
                    self.genesis,
                    # A sync experiment's chain is preloaded: nobody makes blocks.
                    self.authority_keys[index]
                    if index < config.authorities and config.sync is None
                    else None,
                    peers=self._peer_config(index, persistent[index]),
                    relay=config.relay,
                ),
                verifier,
                self.addresses[index],
            )
            for index in range(total)
        ]
        self.network.deliver_to([host.receive for host in self.hosts])
        self._next_spare = config.nodes
        self.adversaries: list[Adversary] = make_adversaries(self, config.adversaries)
        self.invariants: list[Invariant] = [
            NoConflictingFinality(),
            supply_conserved,
            converged,
        ]
        if config.sync is None:  # a sync experiment makes no blocks on purpose
            self.invariants.append(ChainAdvances())
        if config.engine == "bft":
            self.invariants += [
                evidence_committed,
                HaltsWithoutQuorum(self.partitions, config.authorities),
            ]
        self.outbound_targets: OutboundTargets | None = None
        if config.discovery:
            self.outbound_targets = OutboundTargets(config.target_grace)
            self.invariants += [self.outbound_targets, HonestGraphConnected(config.target_grace)]
        self.violations: list[str] = []
        self._workload_rng = self.sim.rng("workload")
        self._nonces: dict[int, int] = {}

    # --- building -------------------------------------------------------------------

    def _static_topology(self, rng: random.Random) -> list[list[int]]:
        """Each node's chosen neighbours (none with discovery: the nodes find them)."""
        count, degree = self.config.nodes, self.config.out_degree
        chosen: list[list[int]] = [[] for _ in range(self.config.total_nodes)]
        if self.config.discovery:
            return chosen
        linked: set[tuple[int, int]] = set()
        for index in range(count):
            others = [i for i in range(count) if i != index]
            for peer in rng.sample(others, min(degree, len(others))):
                if (peer, index) not in linked:  # one session per pair, as on TCP
                    linked.add((index, peer))
                    chosen[index].append(peer)
        return chosen

    def neighbours(self, index: int) -> set[int]:
        """A node's links in the static topology, whichever side dials."""
        linked = {b for a, chosen in enumerate(self.topology) for b in chosen if a == index}
        return linked | {a for a, chosen in enumerate(self.topology) if index in chosen}

    def _peer_config(self, index: int, neighbours: list[int]) -> PeerConfig:
        config = self.config
        bootstrap = range(min(config.bootstrap_nodes, config.nodes))
        return PeerConfig(
            node_id=self.node_ids[index],
            listen=self.addresses[index],
            bootstrap=tuple(self.addresses[b] for b in bootstrap if b != index),
            persistent=tuple(
                PersistentPeer(self.addresses[p], self.node_ids[p]) for p in neighbours
            ),
            discovery=config.discovery,
            outbound_full_relay=config.out_degree,
            block_relay_only=config.block_relay_only if config.discovery else 0,
            max_inbound=config.max_inbound,
            groups=GroupPolicy(),
        )

    def online(self) -> list[SimHost]:
        return [host for host in self.hosts if host.online]

    def honest_online(self) -> list[SimHost]:
        return [host for host in self.hosts if host.online and host.honest]

    @property
    def spies(self) -> list[Spy]:
        return [adversary for adversary in self.adversaries if isinstance(adversary, Spy)]

    # --- links ----------------------------------------------------------------------

    def dial(self, a: int, request: Dial) -> None:
        """`a` dials an address: a session after the handshakes, or a `DialFailed`."""
        b = self.by_address.get(request.address)
        if b is None or b == a:
            self.sim.after(
                DIAL_TIMEOUT, self._dial_failed, a, request, "timed out", self.hosts[a].starts
            )
            return
        delay = HANDSHAKE_ONE_WAY_TRIPS * self.network.latency(a, b)
        self.sim.after(delay, self._established, a, b, request, self.hosts[a].starts)

    def _dial_failed(self, a: int, request: Dial, reason: str, generation: int) -> None:
        host = self.hosts[a]
        if host.starts == generation:  # not a dial of a process that has since died
            host.feed(DialFailed(request.address, reason))

    def _established(self, a: int, b: int, request: Dial, generation: int) -> None:
        first, second = self.hosts[a], self.hosts[b]
        if first.starts != generation or not first.online:
            return
        if not second.online or self.network.cut(a, b):
            first.feed(DialFailed(request.address, "connection refused"))
            return
        if b in first.connected:
            first.feed(DialFailed(request.address, "already connected"))
            return
        first.connected.add(b)
        second.connected.add(a)
        # What each side's hello would say of its chain.
        first_height = first.node.chain.height if first.node is not None else 0
        second_height = second.node.chain.height if second.node is not None else 0
        self._ephemeral = (
            self._ephemeral + 1 if self._ephemeral < EPHEMERAL_PORTS[1] else EPHEMERAL_PORTS[0]
        )
        seen_from = NetAddress(first.address.ip, self._ephemeral)
        first.peer_connected(
            b,
            PeerConnected(
                self.peer_names[b],
                True,
                self.node_ids[b],
                second.address,
                second.address,
                request.kind,
                second_height,
            ),
        )
        if a in second.connected:  # still: a feeler or a refusal may have ended it
            second.peer_connected(
                a,
                PeerConnected(
                    self.peer_names[a],
                    False,
                    self.node_ids[a],
                    seen_from,
                    first.address,
                    ConnectionKind.INBOUND,
                    first_height,
                ),
            )

    def disconnect(self, a: int, b: int, reason: str) -> None:
        """Close the session between `a` and `b`; their peer managers take it from there."""
        for here, there in ((a, b), (b, a)):
            host = self.hosts[here]
            if there in host.connected:
                host.peer_disconnected(there, reason)

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
        nonce = max(self._nonces.get(wallet, 0), origin.node.next_nonce(address))
        recipient = self.wallets[rng.randrange(len(self.wallets))]
        body = TxBody(
            self.chain_id,
            key.public_key,
            address_from_public_key(recipient.public_key),
            rng.randrange(*TX_AMOUNT_RANGE),
            rng.randrange(*TX_FEE_RANGE),
            nonce,
            rng.randbytes(self.config.tx_data_bytes),
        )
        tx = sign_transaction(body, key, aux_rand=rng.randbytes(32))
        self._nonces[wallet] = nonce + 1
        self.metrics.submitted(compute_txid(body), self.sim.now, origin.index)
        origin.feed(TransactionSubmitted(encode(tx)))

    def _schedule_faults(self) -> None:
        for crash in self.config.crashes:
            self.sim.at(crash.at, self.hosts[crash.node].stop)
            if crash.restart_at is not None:
                self.sim.at(crash.restart_at, self.hosts[crash.node].start)
        churn = self.config.churn
        if churn is not None:
            self.sim.at(churn.start, self._churn)
        replace = self.config.replace
        if replace is not None:
            self.sim.at(replace.start, self._replace)

    def _replace(self) -> None:
        """Some nodes leave for good; as many new ones join (fresh keys and addresses)."""
        spec = self.config.replace
        assert spec is not None
        if self.sim.now > self.quiet_from:
            return
        rng = self.sim.rng(f"replace/{self.sim.now}")
        keep = max(self.config.authorities, self.config.bootstrap_nodes)
        eligible = [h for h in self.honest_online() if h.index >= keep]
        count = round(spec.fraction * self.config.nodes)
        for host in rng.sample(eligible, min(len(eligible), count)):
            host.stop()
        for _ in range(count):
            if self._next_spare < len(self.hosts):
                self.hosts[self._next_spare].start()
                self._next_spare += 1
        self.sim.after(spec.interval, self._replace)

    def _churn(self) -> None:
        churn = self.config.churn
        assert churn is not None
        if self.sim.now + churn.downtime > self.quiet_from:
            return
        rng = self.sim.rng(f"churn/{self.sim.now}")
        eligible = [h for h in self.honest_online() if h.index >= self.config.authorities]
        for host in rng.sample(
            eligible, min(len(eligible), round(churn.fraction * self.config.nodes))
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
        starting = self.hosts[: self.config.nodes]  # the spares join later
        sync = self.config.sync
        if sync is not None:  # the holders start with the chain; the joiner comes later
            preload(self)
            late = self.hosts[joiner(self.config)]
            starting = [host for host in starting if host is not late]
            self.sim.at(sync.join_at, late.start)
        for host in starting:
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

    def _finality_latency(self) -> dict[str, float | None] | None:
        """BFT: seconds from a transaction's submission to the commit of its block (at
        the block's proposer). Other engines have no votes, only depth: None."""
        if self.config.engine != "bft":
            return None
        reference = next(iter(self.honest_online()), None)
        if reference is None or reference.node is None:
            return None
        chain, metrics = reference.node.chain, self.metrics
        samples: list[float] = []
        for height in range(1, chain.height + 1):
            block_hash_ = chain.hash_at(height)
            committed = metrics.block_origin.get(block_hash_) if block_hash_ else None
            block = chain.block(block_hash_) if committed is not None and block_hash_ else None
            for tx in block.transactions if block is not None else ():
                submitted = metrics.tx_origin.get(txid_of(tx))
                if submitted is not None and committed is not None:
                    samples.append(committed - submitted)
        return percentiles(samples)

    def _attack_outcome(self) -> dict[str, Any]:
        from meshchain.sim.eclipse import eclipse_outcome  # eclipse imports this module

        outcome = eclipse_outcome(self)
        return {} if outcome is None else {"eclipse": outcome}

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
                "peers": peer_report(self, self.outbound_targets),
                **self._attack_outcome(),
                "propagation_lower_bound_seconds": lower_bounds(self),
                "relay_cost": relay_cost(self),
                "finality_latency_seconds": self._finality_latency(),
                **(
                    {"sync": {label(config.sync.sources[0]): sync_report(self)}}
                    if config.sync is not None
                    else {}
                ),
                "simulator": {
                    "events": self.sim.events_processed,
                    "virtual_seconds": config.duration,
                },
            },
            "invariant_violations": self.violations,
        }


def host_address(index: int, config: SimConfig) -> NetAddress:
    """A public-looking IPv4 address: node `index` in /16 group `index % groups`."""
    groups = config.groups or config.nodes
    group = index % groups
    ip = bytes([20 + group // 256, group % 256, index // 256 % 256, index % 256])
    return NetAddress(ip, SIM_PORT)

"""Transaction relay through one real node: validated transactions relayed per second.

One node (`Node` + `P2PService` + `NodeDriver`, the real runtime) runs in a subprocess
pinned to one CPU, listening on 127.0.0.1. This process, pinned to the other CPU, runs the
load on the real `PeerConnection` and `SecureSession` (Noise, ChaCha20-Poly1305):

* 4 feeders, which the node dials (outbound: their announcements are requested at once).
  Each announces its share of pre-signed transactions with `Inventory` (a window of
  4,000 unfetched, under the tracker's 5,000 per peer) and answers `GetData` with
  `Transactions`.
* 8 receivers, which dial the node (inbound). Each requests everything the node
  announces to it and counts the distinct transactions it receives.

A transaction counts as relayed once the node has accepted it (decoded, checked,
signature verified, admitted to its mempool) and all 8 receivers hold it, fetched through
announce -> GetData -> Transactions. The rate is N / (time from the feeders' first
announcement until the last receiver has the last transaction); the node's mempool must
hold all N afterwards. The transactions come from N/50 funded accounts of a ChainKit
genesis, 50 nonces each (under MAX_PENDING_PER_SENDER), so every one is valid; the node
has no validator key, so no block is made and the mempool just fills.

Two figures, each against its own baseline: per second of wall clock, and per second
of CPU time (the node process's `process_time` from its listening to the run's end,
handshakes and idle ticks included; the baseline's own `process_time`). The machine's
CPUs may be shared with other work, which takes wall-clock time from both processes
unevenly; CPU time is what one core spends per transaction whatever else runs.

The node's trickle timers (mean 2 s outbound, 5 s inbound by default) are shortened to
--trickle (0.1 s) so that a run of a few seconds measures throughput rather than the
announcement delay; shorter trickles mean more and smaller Inventory, GetData and
Transactions messages per transaction, more work for the node, not less.

Baseline, measured in the same run on the node's CPU before each relay run (paired
runs: the machine's two CPUs are shared, so each relay figure has its own baseline): the
isolated per-transaction pipeline, no I/O and no node logic: msgspec decode of a
`Transactions` message of 100 (the size of the node's requests to a feeder), BIP340
verification of each transaction through `SignatureVerifier` (txid and check), encoding
the `Transactions` message again and sealing it with ChaCha20-Poly1305 in Noise frames
for 8 peers. uvloop is used when installed, in both processes.

    python bench/relay.py [--txs 60000] [--rounds 3] [--trickle 0.1]
    python bench/relay.py --profile node.prof   # one run, the node under cProfile
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import cast

from _service import BenchService
from meshchain.chainkit import ChainKit
from meshchain.core.chain.genesis import chain_id
from meshchain.core.chain.tx import Transaction, compute_txid, txid_of
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.events import NodeStarted
from meshchain.core.node import Node, NodeConfig
from meshchain.core.peers.config import PeerConfig
from meshchain.core.relay.config import RelayConfig
from meshchain.core.store import MemoryStore
from meshchain.core.transport.identity import new_noise_static_key
from meshchain.core.transport.noise import CipherState
from meshchain.core.transport.session import (
    MAX_FRAME_PLAINTEXT,
    AdmissionPolicy,
    MessageArrived,
    SessionEstablished,
    SessionEvent,
)
from meshchain.core.wire.messages import (
    MAX_INV_ENTRIES,
    MAX_TXS_PER_MESSAGE,
    MESSAGE_CODEC,
    BlockMessage,
    GetBlock,
    GetData,
    GoodbyeCode,
    Inventory,
    InvKind,
    Message,
    NotFound,
    Transactions,
)
from meshchain.runtime.driver import NodeDriver, install_uvloop
from meshchain.runtime.network import P2PConfig, P2PService, PeerConnection

HOST = "127.0.0.1"
FEEDERS, RECEIVERS = 4, 8
NONCES_PER_ACCOUNT = 50  # under MAX_PENDING_PER_SENDER (64)
ANNOUNCE_WINDOW, ANNOUNCE_BATCH = 4_000, 1_000  # the tracker keeps 5,000 per peer
BASELINE_BATCH = 100  # MAX_PEER_IN_FLIGHT: what the node asks a feeder for at a time
RUN_CAP = 60.0  # seconds: a relay run that has not finished by then is reported as is
TARGET_RATIO, TARGET_RATE = 0.6, 5_000.0
SEED = 11


# --- the transactions ------------------------------------------------------------------


def make_transactions(count: int) -> tuple[ChainKit, list[list[Transaction]]]:
    """`count` valid transfers, split between the feeders by sender, nonces in order."""
    accounts = -(-count // NONCES_PER_ACCOUNT)
    kit = ChainKit(seed=SEED, accounts=accounts)
    the_chain_id = chain_id(kit.genesis)
    shares: list[list[Transaction]] = [[] for _ in range(FEEDERS)]
    made = 0
    for nonce in range(NONCES_PER_ACCOUNT):
        for sender in range(accounts):
            if made == count:
                break
            tx = kit.transfer(the_chain_id, sender, (sender + 1) % accounts, 1, 1_000, nonce)
            shares[sender % FEEDERS].append(tx)
            made += 1
    return kit, shares


def baseline_rate(txs: list[Transaction], repeats: int = 3) -> tuple[float, float]:
    """Transactions a second through decode, verify, encode and seal-for-8, best of runs:
    per second of wall clock, and per second of this process's CPU time."""
    raws = [
        MESSAGE_CODEC.encode(Transactions(txs[i : i + BASELINE_BATCH]))
        for i in range(0, len(txs), BASELINE_BATCH)
    ]
    best = best_cpu = 0.0
    for _ in range(repeats):
        verifier = SignatureVerifier()  # keys parsed afresh, as a node meets new senders
        ciphers = [CipherState(key=bytes([i + 1]) * 32) for i in range(RECEIVERS)]
        start, cpu = time.perf_counter(), time.process_time()
        for raw in raws:
            message = cast(Transactions, MESSAGE_CODEC.decode(raw))
            for tx in message.transactions:
                body = tx.body
                if not verifier.verify(body.sender, compute_txid(body), tx.signature):
                    raise AssertionError("a valid signature failed")
            out = MESSAGE_CODEC.encode(Transactions(message.transactions))
            for cipher in ciphers:
                for offset in range(0, len(out), MAX_FRAME_PLAINTEXT):
                    cipher.encrypt_with_ad(b"", out[offset : offset + MAX_FRAME_PLAINTEXT])
        best = max(best, len(txs) / (time.perf_counter() - start))
        best_cpu = max(best_cpu, len(txs) / (time.process_time() - cpu))
    return best, best_cpu


# --- the node (subprocess) -------------------------------------------------------------


async def run_node(args: argparse.Namespace) -> None:
    """The node: dials the feeders, takes the receivers, runs until stdin closes."""
    kit = ChainKit(seed=SEED, accounts=args.accounts)
    key = SecretKey.generate(random.Random(SEED + 1))
    relay = RelayConfig(outbound_trickle=args.trickle, inbound_trickle=args.trickle)
    node = Node(
        NodeConfig(
            kit.genesis, peers=PeerConfig(node_id=key.public_key, discovery=False), relay=relay
        ),
        MemoryStore(),
        random.Random(SEED),
    )
    driver = NodeDriver(node)
    service = P2PService(
        driver,
        P2PConfig(
            identity=key,
            noise_static=new_noise_static_key(),
            policy=AdmissionPolicy(node.chain.chain_id, None),
        ),
        random.Random(SEED),
    )
    _, port = await service.listen(HOST, 0)
    driver.feed(NodeStarted())
    for feeder in args.feeders.split(","):
        await service.dial(HOST, int(feeder))
    print(port, flush=True)
    cpu = time.process_time()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    cpu = time.process_time() - cpu
    counters = node.peer_manager.counters
    stats = {
        "mempool": len(node.mempool),
        "rate_limited": counters.rate_limited,
        "punished": counters.punished,
        "cpu_s": round(cpu, 2),  # from its listening until the end of the run
    }
    driver.stop()
    await service.close()
    print(json.dumps(stats), flush=True)


def node_main(args: argparse.Namespace) -> None:
    if not args.profile:
        asyncio.run(run_node(args))
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(run_node(args))
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


# --- the load: feeders and receivers ---------------------------------------------------


class Link(PeerConnection):
    def __init__(self, service: LoadService, initiator: bool) -> None:
        super().__init__(service, initiator=initiator, label="load")
        self.app = service.app


class LoadService(BenchService):
    """A bench peer's service: one per peer, each with its own identity."""

    def __init__(self, seed: int, the_chain_id: bytes, app: Peer) -> None:
        super().__init__(seed, the_chain_id)
        self.app = app

    def on_event(self, connection: PeerConnection, event: SessionEvent) -> None:
        if isinstance(event, MessageArrived):
            self.app.message(cast(Link, connection), event.message)
        elif isinstance(event, SessionEstablished):
            self.app.established(cast(Link, connection))


@dataclass
class Peer:
    """A bench peer: established, then a round trip (GetBlock of genesis) proves that the
    node has registered it before any measurement starts."""

    genesis: bytes
    link: Link | None = None
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def established(self, link: Link) -> None:
        self.link = link
        link.send(GetBlock(self.genesis))

    def message(self, link: Link, message: Message) -> None:
        if isinstance(message, BlockMessage) and not self.ready.done():
            self.ready.set_result(None)


@dataclass
class Feeder(Peer):
    txs: list[Transaction] = field(default_factory=list)
    by_id: dict[bytes, Transaction] = field(default_factory=dict)
    announced: int = 0
    served: int = 0

    def start(self) -> None:
        self.by_id = {txid_of(tx): tx for tx in self.txs}
        self._announce()

    def _announce(self) -> None:
        assert self.link is not None
        while self.announced < len(self.txs) and self.announced - self.served < ANNOUNCE_WINDOW:
            batch = self.txs[self.announced : self.announced + ANNOUNCE_BATCH]
            self.link.send(Inventory(InvKind.TRANSACTION, [txid_of(tx) for tx in batch]))
            self.announced += len(batch)

    def message(self, link: Link, message: Message) -> None:
        if isinstance(message, GetData) and message.kind is InvKind.TRANSACTION:
            found = [self.by_id[h] for h in message.hashes if h in self.by_id]
            for i in range(0, len(found), MAX_TXS_PER_MESSAGE):
                link.send(Transactions(found[i : i + MAX_TXS_PER_MESSAGE]))
            self.served += len(found)
            if self.announced - self.served <= ANNOUNCE_WINDOW - ANNOUNCE_BATCH:
                self._announce()
        else:  # the node's inventories of the other feeders' transactions: not wanted
            super().message(link, message)


@dataclass
class Receiver(Peer):
    expected: int = 0
    signatures: set[bytes] = field(default_factory=set)
    not_found: int = 0
    done_at: float | None = None
    all_done: asyncio.Future[None] | None = None
    pending: list[Receiver] = field(default_factory=list)

    def message(self, link: Link, message: Message) -> None:
        if isinstance(message, Inventory) and message.kind is InvKind.TRANSACTION:
            hashes = message.hashes
            for i in range(0, len(hashes), MAX_INV_ENTRIES):
                link.send(GetData(InvKind.TRANSACTION, hashes[i : i + MAX_INV_ENTRIES]))
        elif isinstance(message, Transactions):
            signatures = self.signatures
            for tx in message.transactions:
                signatures.add(tx.signature)
            if self.done_at is None and len(signatures) >= self.expected:
                self.done_at = time.perf_counter()
                if all(r.done_at is not None for r in self.pending):
                    assert self.all_done is not None
                    if not self.all_done.done():
                        self.all_done.set_result(None)
        elif isinstance(message, NotFound):
            self.not_found += len(message.hashes)
        else:
            super().message(link, message)


@dataclass
class RelayResult:
    rate: float
    cpu_rate: float  # relayed per second of the node process's CPU time
    relayed: int  # transactions every receiver holds
    elapsed: float
    stats: dict[str, object]


async def relay_run(
    kit: ChainKit, shares: list[list[Transaction]], args: argparse.Namespace, node_cpu: int | None
) -> RelayResult:
    loop = asyncio.get_running_loop()
    the_chain_id = chain_id(kit.genesis)
    genesis = kit.chain().tip_hash
    total = sum(len(share) for share in shares)
    feeders = [Feeder(genesis, txs=share) for share in shares]
    servers = []
    for i, feeder in enumerate(feeders):
        service = LoadService(100 + i, the_chain_id, feeder)
        servers.append(
            await loop.create_server(lambda s=service: Link(s, False), HOST, 0)  # type: ignore[misc]
        )
    ports = [str(server.sockets[0].getsockname()[1]) for server in servers]
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--node",
        "--accounts",
        str(len(kit.keys)),
        "--trickle",
        str(args.trickle),
        "--feeders",
        ",".join(ports),
    ]
    if args.profile:
        command += ["--profile", args.profile]
    node = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if node_cpu is not None:
            os.sched_setaffinity(node.pid, {node_cpu})
        assert node.stdout is not None
        assert node.stdin is not None
        line = await loop.run_in_executor(None, node.stdout.readline)
        if not line.strip():
            raise SystemExit("the node subprocess did not start")
        node_port = int(line)
        all_done = loop.create_future()
        receivers: list[Receiver] = []
        for i in range(RECEIVERS):
            receiver = Receiver(genesis, expected=total, all_done=all_done, pending=receivers)
            receivers.append(receiver)
            service = LoadService(200 + i, the_chain_id, receiver)
            await loop.create_connection(lambda s=service: Link(s, True), HOST, node_port)  # type: ignore[misc]
        peers: list[Peer] = [*feeders, *receivers]
        await asyncio.wait_for(asyncio.gather(*(peer.ready for peer in peers)), 30)
        start, load_cpu = time.perf_counter(), time.process_time()
        for feeder in feeders:
            feeder.start()
        with contextlib.suppress(TimeoutError):  # reported as far as it got
            await asyncio.wait_for(all_done, RUN_CAP)
        end = max((r.done_at or time.perf_counter()) for r in receivers)
        relayed = min(len(r.signatures) for r in receivers)
        load_cpu = time.process_time() - load_cpu
        for receiver in receivers:
            if receiver.link is not None:
                receiver.link.close(GoodbyeCode.NORMAL, "done")
        node.stdin.close()
        stats = json.loads(await loop.run_in_executor(None, node.stdout.readline) or "{}")
        stats["load_cpu_s"] = round(load_cpu, 2)
        if any(r.not_found for r in receivers):
            stats["not_found"] = sum(r.not_found for r in receivers)
        cpu_rate = relayed / max(float(stats.get("cpu_s", 0.0)), 1e-9)
        return RelayResult(relayed / (end - start), cpu_rate, relayed, end - start, stats)
    finally:
        if node.stdin is not None and not node.stdin.closed:
            node.stdin.close()
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        for server in servers:
            server.close()


# --- the report ------------------------------------------------------------------------


def report(baselines: list[tuple[float, float]], results: list[RelayResult], total: int) -> None:
    """Best of the runs for each figure, as bench/transport.py does; every pair below."""
    misses: list[str] = []
    print(f"{'':34} {'value':>10} {'baseline':>10} {'ratio':>6}  target")
    for name, value, base in (
        ("relayed tx/s, wall clock", max(r.rate for r in results), max(b[0] for b in baselines)),
        (
            "relayed tx/s per CPU-second",
            max(r.cpu_rate for r in results),
            max(b[1] for b in baselines),
        ),
    ):
        ratio = value / base
        for shown, ok, target in (
            (f"{ratio:>6.2f}", ratio >= TARGET_RATIO, f">= {TARGET_RATIO} x"),
            ("", value >= TARGET_RATE, f">= {TARGET_RATE:,.0f} tx/s"),
        ):
            print(
                f"{name:34} {value:>10,.0f} {base:>10,.0f} {shown:>6}  {target:13}"
                f"  {'PASS' if ok else 'BELOW TARGET'}"
            )
            if not ok:
                misses.append(f"{name} {target.split()[0]} {target.split(maxsplit=1)[1]}")
    for i, (b, r) in enumerate(zip(baselines, results)):
        print(
            f"  pair {i + 1}: baseline {b[0]:,.0f} tx/s ({b[1]:,.0f} per CPU-s), relay "
            f"{r.rate:,.0f} tx/s ({r.cpu_rate:,.0f} per node CPU-s; {r.relayed:,}/{total:,} "
            f"to all {RECEIVERS} in {r.elapsed:.2f} s), ratios {r.rate / b[0]:.2f} wall, "
            f"{r.cpu_rate / b[1]:.2f} CPU; node: {json.dumps(r.stats)}"
        )
    incomplete = [r for r in results if r.relayed < total or r.stats.get("mempool") != total]
    if incomplete:
        misses.append(f"{len(incomplete)} run(s) did not relay and pool every transaction")
    print("PASS: all targets met" if not misses else "BELOW TARGET: " + "; ".join(misses))


async def measure(args: argparse.Namespace, cpus: list[int]) -> None:
    started = time.perf_counter()
    kit, shares = make_transactions(args.txs)
    total = sum(len(share) for share in shares)
    print(
        f"signed {total:,} transactions from {len(kit.keys):,} accounts in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    everything = [tx for share in shares for tx in share]
    node_cpu = cpus[0] if len(cpus) > 1 else None
    load_cpus = set(cpus[1:]) if len(cpus) > 1 else set(cpus)
    baselines: list[tuple[float, float]] = []
    results: list[RelayResult] = []
    rounds = 1 if args.profile else args.rounds
    for _ in range(rounds):
        if node_cpu is not None:
            os.sched_setaffinity(0, {node_cpu})  # the baseline on the node's CPU
        baselines.append(baseline_rate(everything[: min(total, 20_000)]))
        os.sched_setaffinity(0, load_cpus)
        results.append(await relay_run(kit, shares, args, node_cpu))
    report(baselines, results, total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=60_000, help="transactions per run")
    parser.add_argument("--rounds", type=int, default=3, help="paired runs (best is shown)")
    parser.add_argument("--trickle", type=float, default=0.1, help="node trickle means, s")
    parser.add_argument("--profile", help="one run, the node profiled into this file")
    parser.add_argument("--node", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--accounts", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--feeders", help=argparse.SUPPRESS)
    args = parser.parse_args()
    install_uvloop()
    if args.node:
        node_main(args)
        return
    loop_name = type(asyncio.get_event_loop_policy()).__module__.split(".")[0]
    cpus = sorted(os.sched_getaffinity(0))
    where = (
        f"node on CPU {cpus[0]}, load on CPU {', '.join(map(str, cpus[1:]))}"
        if len(cpus) > 1
        else "node and load share the only CPU"
    )
    print(
        f"relay bench: {loop_name} loop, Python {sys.version.split()[0]}, {len(cpus)} CPUs "
        f"({where}); {args.txs:,} transactions per run, {FEEDERS} feeders -> node -> "
        f"{RECEIVERS} receivers, node trickle mean {args.trickle} s; "
        f"{1 if args.profile else args.rounds} paired run(s)",
        flush=True,
    )
    asyncio.run(measure(args, cpus))
    if args.profile:
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    main()

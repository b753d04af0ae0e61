"""BFT consensus throughput: 4 validator processes on 127.0.0.x saturated with signed
transactions; finalized transactions a second and commit latency (p50, p99).

The network is four real `meshchain node` processes of one consortium genesis
(`meshchain.devnet`), each a validator with its own SQLite store and write-ahead log.
This process is the load: one member identity listed in the genesis, listening on
127.0.0.1, which every validator dials as a persistent peer (so it is an outbound
peer to them: its announcements are fetched at once, as Bitcoin Core does for outbound
peers). Each transaction is announced to all four validators (`Inventory`), which
fetch it (`GetData` -> `Transactions`), check it and pool it; whichever validator
proposes next has it. Relay between the validators runs as usual.

Transactions are pre-signed transfers from many funded accounts, nonces in sequence,
offered at --rate a second (above the target: the network is saturated when it
finalizes less than it is offered), with at most --window submitted and not yet final
(a queue that bounded, beyond it the load waits as a client would). The load follows
consensus as an observer: it keeps the proposals it is sent and counts the precommits,
each signature checked; a block is final, for the load, once more than 2/3 of the
voting power precommitted it. Then every transaction in it is finalized:

* finalized tx/s: transactions in blocks finalized during the measured window
  (--seconds, after --warmup) divided by its length;
* commit latency: from the transaction's first announcement to the finality of its
  block, p50 and p99 over the transactions finalized in the window.

Baseline, measured in this run before the network starts: raw BIP340 verification of
the transactions' signatures on one core (`SignatureVerifier`, txids precomputed). Every
validator verifies every transaction once, so it bounds any one validator's rate; with
four validators and the load sharing this machine's CPUs, the bound is lower still.
The validators' CPU time over the window, per finalized transaction, is printed
against the cost of one signature check.

    python bench/consensus.py [--seconds 60] [--warmup 5] [--rate 2500] [--window 10000]
    python bench/consensus.py --tx-index off  # validators without a transaction index
    python bench/consensus.py --profile DIR   # py-spy samples of every validator over the
                                              # window (cProfile if py-spy is missing)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from _service import BenchService
from meshchain.cli.setup import make_genesis
from meshchain.core.chain.block import Block, block_hash
from meshchain.core.chain.genesis import ChainMode, chain_id
from meshchain.core.chain.tx import Transaction, TxBody, compute_txid, sign_transaction
from meshchain.core.consensus.bft import BftEngine
from meshchain.core.consensus.tendermint import VoteKind
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.transport.session import MessageArrived, SessionEstablished, SessionEvent
from meshchain.core.wire.messages import (
    GetData,
    Inventory,
    InvKind,
    Message,
    ProposalMessage,
    Transactions,
    VoteMessage,
)
from meshchain.devnet import NodeProcess, ProcessNet, create_devnet
from meshchain.errors import ValidationError
from meshchain.runtime.driver import install_uvloop
from meshchain.runtime.network import PeerConnection

HOST = "127.0.0.1"
VALIDATORS = 4
LOAD_SEED = 7  # the load's identity key, listed as a genesis member
SEED = 11  # accounts and signatures
NONCES_PER_ACCOUNT = 50  # under MAX_PENDING_PER_SENDER (64), as bench/relay.py
AMOUNT, FEE = 1, 1_000
# Seconds between the load's announcement rounds: under the validators' Inventory rate
# limit (INVENTORIES_PER_MINUTE, ten a second per peer) with room to spare.
TICK = 0.125
# Announced and not yet fetched, per validator: under its tracker's MAX_PEER_ANNOUNCEMENTS
# (5,000), whose excess it would ignore.
LINK_WINDOW = 4_000
# The bench genesis's BFT timeouts, ms: propose and vote are CometBFT's defaults
# (timeout_propose 3 s, timeout_prevote/precommit 1 s, our genesis defaults too); the
# commit timeout is CometBFT's timeout_commit default, 1 s: after a commit a validator
# waits that long for late precommits, and the next proposal gathers what arrived.
BENCH_TIMEOUTS_MS = (3_000, 1_000, 1_000)
TARGET_RATE, TARGET_P50 = 2_000.0, 1.5
ACCOUNT_FUNDS = 10**10  # each account's genesis balance: far more than its fees
PY_SPY = "py-spy"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- transactions and the baseline -----------------------------------------------------


@dataclass
class Workload:
    keys: list[SecretKey]
    txs: list[Transaction]  # nonce-major: every account's nonce 0, then nonce 1, ...
    txids: list[bytes]


def account_keys(count: int) -> list[SecretKey]:
    rng = random.Random(SEED)
    return [SecretKey.generate(rng) for _ in range(count)]


def sign_workload(keys: list[SecretKey], the_chain_id: bytes, count: int) -> Workload:
    rng = random.Random(SEED + 1)
    addresses = [address_from_public_key(key.public_key) for key in keys]
    txs: list[Transaction] = []
    for nonce in range(NONCES_PER_ACCOUNT):
        for sender, key in enumerate(keys):
            if len(txs) == count:
                break
            to = addresses[(sender + 1) % len(keys)]
            body = TxBody(the_chain_id, key.public_key, to, AMOUNT, FEE, nonce, b"")
            txs.append(sign_transaction(body, key, aux_rand=rng.randbytes(32)))
    return Workload(keys, txs, [compute_txid(tx.body) for tx in txs])


def verify_rate(work: Workload, count: int = 20_000, repeats: int = 3) -> float:
    """BIP340 verifications a second on one core, best of `repeats` (keys parsed afresh)."""
    items = [(tx.body.sender, txid, tx.signature) for tx, txid in zip(work.txs, work.txids)]
    items = items[:count]
    best = 0.0
    for _ in range(repeats):
        verifier = SignatureVerifier()
        start = time.process_time()
        for key, txid, signature in items:
            if not verifier.verify(key, txid, signature):
                raise AssertionError("a valid signature failed")
        best = max(best, len(items) / (time.process_time() - start))
    return best


# --- the load peer ---------------------------------------------------------------------


class Link(PeerConnection):
    """The load's connection to one validator (which dialled us)."""

    def __init__(self, service: LoadService) -> None:
        super().__init__(service, initiator=False, label="validator")
        self.queue: list[int] = []  # workload indexes to announce here, in order
        self.announced = 0  # how far into `queue`
        self.served = 0


class LoadService(BenchService):
    def __init__(self, load: Load, the_chain_id: bytes) -> None:
        super().__init__(LOAD_SEED, the_chain_id)
        self.load = load

    def on_event(self, connection: PeerConnection, event: SessionEvent) -> None:
        link = cast(Link, connection)
        if isinstance(event, MessageArrived):
            self.load.message(link, event.message)
        elif isinstance(event, SessionEstablished):
            self.load.links.append(link)


@dataclass
class Finalized:
    height: int
    at: float
    txs: int
    latencies: list[float]


@dataclass
class Load:
    work: Workload
    engine: BftEngine
    window: int
    rate: float  # offered transactions a second
    links: list[Link] = field(default_factory=list)
    by_id: dict[bytes, int] = field(default_factory=dict)
    submitted_at: dict[bytes, float] = field(default_factory=dict)  # by signature
    next_tx: int = 0
    in_flight: int = 0
    proposals: dict[bytes, Block] = field(default_factory=dict)
    precommits: dict[tuple[int, int, bytes], dict[int, int]] = field(default_factory=dict)
    final_height: int = 0
    waiting: dict[bytes, tuple[int, float]] = field(default_factory=dict)  # no proposal yet
    blocks: list[Finalized] = field(default_factory=list)
    heights: dict[int, int] = field(default_factory=dict)  # finalized height -> its txs
    feeding_since: float | None = None

    def __post_init__(self) -> None:
        self.by_id = {txid: i for i, txid in enumerate(self.work.txids)}

    def tick(self, now: float) -> None:
        """Submit what the offered rate calls for, within the window; then announce on
        each link what it may take."""
        if self.feeding_since is not None:
            due = int(self.rate * (now - self.feeding_since)) - self.next_tx
            fresh = min(due, self.window - self.in_flight, len(self.work.txs) - self.next_tx)
            if fresh > 0:
                submitting = range(self.next_tx, self.next_tx + fresh)
                self.next_tx += fresh
                self.in_flight += fresh
                for link in self.links:
                    link.queue.extend(submitting)
        txs, txids, submitted = self.work.txs, self.work.txids, self.submitted_at
        for link in self.links:
            room = LINK_WINDOW - (link.announced - link.served)
            batch = link.queue[link.announced : link.announced + max(room, 0)]
            if not batch:
                continue
            link.announced += len(batch)
            for index in batch:
                submitted.setdefault(txs[index].signature, now)
            link.send(Inventory(InvKind.TRANSACTION, [txids[i] for i in batch]))

    def message(self, link: Link, message: Message) -> None:
        now = time.time()
        if type(message) is VoteMessage:
            self._vote(message, now)
        elif type(message) is ProposalMessage:
            block = message.proposal.block
            if block.header.height > self.final_height:
                value = block_hash(block)
                self.proposals[value] = block
                waiting = self.waiting.pop(value, None)
                if waiting is not None:
                    self._finalize(waiting[0], block, waiting[1])
        elif type(message) is GetData and message.kind is InvKind.TRANSACTION:
            found = [
                self.work.txs[i] for h in message.hashes if (i := self.by_id.get(h)) is not None
            ]
            link.served += len(message.hashes)
            if found:
                link.send(Transactions(found))

    def _vote(self, message: VoteMessage, now: float) -> None:
        vote = message.vote
        if vote.kind != VoteKind.PRECOMMIT or not vote.value or vote.height <= self.final_height:
            return
        voters = self.precommits.setdefault((vote.height, vote.round, vote.value), {})
        if vote.validator in voters:
            return
        try:
            key = self.engine.check_vote(vote)
        except ValidationError:
            return
        voters[vote.validator] = self.engine.validators.power[key]
        if not self.engine.validators.over_two_thirds(sum(voters.values())):
            return
        block = self.proposals.get(vote.value)
        if block is None:
            self.waiting[vote.value] = (vote.height, now)
        else:
            self._finalize(vote.height, block, now)

    def _finalize(self, height: int, block: Block, at: float) -> None:
        self.final_height = max(self.final_height, height)
        latencies = []
        for tx in block.transactions:
            sent = self.submitted_at.pop(tx.signature, None)
            if sent is not None:
                latencies.append(at - sent)
        self.in_flight -= len(block.transactions)
        self.blocks.append(Finalized(height, at, len(block.transactions), latencies))
        self.heights[height] = len(block.transactions)
        done = self.final_height
        self.proposals = {h: b for h, b in self.proposals.items() if b.header.height > done}
        self.precommits = {k: v for k, v in self.precommits.items() if k[0] > done}


# --- the run ---------------------------------------------------------------------------


def cpu_seconds(process: NodeProcess) -> float:
    """User + system CPU of a running node process, from /proc."""
    assert process.process is not None
    fields = Path(f"/proc/{process.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class RunResult:
    window: list[Finalized]
    seconds: float
    validator_cpu: float  # all validators, over the window
    load_cpu: float
    submitted: int
    exhausted: bool
    mismatched: list[int]  # heights where node0's block differs from what the load saw


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def run(args: argparse.Namespace, root: Path) -> tuple[RunResult, float]:
    load_key = SecretKey.generate(random.Random(LOAD_SEED))
    accounts = -(-args.txs // NONCES_PER_ACCOUNT)
    keys = account_keys(accounts)
    validator_keys = [SecretKey.generate() for _ in range(VALIDATORS)]
    node_keys = [SecretKey.generate() for _ in range(VALIDATORS)]
    loop = asyncio.get_running_loop()
    genesis = make_genesis(
        ChainMode.CONSORTIUM,
        chain_name="bench-consensus",
        validators=validator_keys,
        members=[*node_keys, load_key],
        allocations=[(address_from_public_key(k.public_key), ACCOUNT_FUNDS) for k in keys],
        bft_timeouts_ms=BENCH_TIMEOUTS_MS,
    )
    started = time.perf_counter()
    work = sign_workload(keys, chain_id(genesis), args.txs)
    print(
        f"signed {len(work.txs):,} transactions from {accounts:,} accounts in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    baseline = verify_rate(work)
    load = Load(work, BftEngine(genesis), args.window, args.rate)
    service = LoadService(load, chain_id(genesis))
    server = await loop.create_server(lambda: Link(service), HOST, 0)
    port = server.sockets[0].getsockname()[1]
    net = create_devnet(
        root,
        genesis,
        node_keys,
        validator_keys,
        extra_peers=[f"{HOST}:{port}"],
        tx_index=args.tx_index == "on",
    )
    if args.profile and py_spy() is None:
        for i, node in enumerate(net.nodes):
            node.profile = Path(args.profile).resolve() / f"validator{i}.prof"
    net.start()
    try:
        return await measure(args, net, load), baseline
    finally:
        await loop.run_in_executor(None, net.stop)
        server.close()


def py_spy() -> str | None:
    """The py-spy sampling profiler: on PATH or beside this Python (a venv's bin/)."""
    beside = Path(sys.executable).parent / PY_SPY
    return shutil.which(PY_SPY) or (str(beside) if beside.exists() else None)


def start_py_spy(args: argparse.Namespace, net: ProcessNet) -> list[subprocess.Popen[bytes]]:
    """Sample every validator over the window (py-spy: no overhead inside the node)."""
    spy = py_spy()
    if not args.profile or spy is None:
        return []
    spies = []
    for i, node in enumerate(net.nodes):
        assert node.process is not None
        out = Path(args.profile) / f"validator{i}.txt"
        command = [spy, "record", "-p", str(node.process.pid), "-d", str(int(args.seconds))]
        command += ["-r", "200", "-f", "raw", "--nonblocking", "-o", str(out)]
        spies.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return spies


async def measure(args: argparse.Namespace, net: ProcessNet, load: Load) -> RunResult:
    deadline = time.monotonic() + 60
    while len(load.links) < VALIDATORS or load.final_height < 1:
        if time.monotonic() > deadline:
            raise SystemExit("the validators did not connect and commit within 60 s")
        await asyncio.sleep(0.1)
    begin = time.time()
    load.feeding_since = begin
    window_start, window_end = begin + args.warmup, begin + args.warmup + args.seconds
    cpu_start: list[float] = []
    load_cpu = 0.0
    spies: list[subprocess.Popen[bytes]] = []
    while (now := time.time()) < window_end:
        if not cpu_start and now >= window_start:
            cpu_start = [cpu_seconds(node) for node in net.nodes]
            load_cpu = time.process_time()
            spies = start_py_spy(args, net)
        load.tick(now)
        await asyncio.sleep(TICK)
    validator_cpu = sum(cpu_seconds(n) for n in net.nodes) - sum(cpu_start)
    load_cpu = time.process_time() - load_cpu
    load.feeding_since = None
    window = [b for b in load.blocks if window_start <= b.at < window_end]
    for spy in spies:
        spy.wait()
    await asyncio.get_running_loop().run_in_executor(None, net.stop)
    chain, store = net.nodes[0].chain(net.genesis)
    try:
        mismatched = []
        for height, count in load.heights.items():
            if height > chain.height:
                continue  # final for the load; node0 was stopped before it connected it
            block = chain.block(chain.hash_at(height) or b"")
            if block is None or len(block.transactions) != count:
                mismatched.append(height)
    finally:
        store.close()
    return RunResult(
        window,
        args.seconds,
        validator_cpu,
        load_cpu,
        load.next_tx,
        load.next_tx == len(load.work.txs),
        mismatched,
    )


def report(result: RunResult, baseline: float, args: argparse.Namespace) -> None:
    finalized = sum(b.txs for b in result.window)
    rate = finalized / result.seconds
    latencies = [x for b in result.window for x in b.latencies]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    blocks = len(result.window)
    per_tx = result.validator_cpu / VALIDATORS / max(finalized, 1)
    print(
        f"window {result.seconds:.0f} s: {blocks} blocks finalized, {finalized:,} "
        f"transactions ({finalized / max(blocks, 1):,.0f} a block, a block every "
        f"{result.seconds / max(blocks, 1):.2f} s); offered {args.rate:,.0f} tx/s, "
        f"{result.submitted:,} submitted in all"
    )
    print(f"{'':38} {'value':>10} {'baseline':>10} {'ratio':>6}  target")
    ok_rate, ok_p50 = rate >= TARGET_RATE, 0 < p50 < TARGET_P50
    print(
        f"{'finalized tx/s':38} {rate:>10,.0f} {baseline:>10,.0f} {rate / baseline:>6.3f}  "
        f"{'>= ' + format(TARGET_RATE, ',.0f') + ' tx/s':13}  "
        f"{'PASS' if ok_rate else 'BELOW TARGET'}"
    )
    print(
        f"{'commit latency p50, s':38} {p50:>10.3f} {'':>10} {'':>6}  "
        f"{'< ' + str(TARGET_P50) + ' s':13}  {'PASS' if ok_p50 else 'BELOW TARGET'}"
    )
    print(f"{'commit latency p99, s':38} {p99:>10.3f}")
    print(
        f"{'validator CPU per finalized tx, us':38} {per_tx * 1e6:>10,.0f} "
        f"{1e6 / baseline:>10,.1f} {per_tx * baseline:>6.1f}  (baseline: one signature check)"
    )
    cores = len(os.sched_getaffinity(0))
    print(
        f"CPU over the window: validators {result.validator_cpu:.1f} s "
        f"({result.validator_cpu / result.seconds:.2f} cores), load {result.load_cpu:.1f} s "
        f"({result.load_cpu / result.seconds:.2f} cores), of {cores}; CPU-bound bound: "
        f"{cores / (VALIDATORS * max(per_tx, 1e-9)):,.0f} tx/s if the validators had "
        f"all {cores} cores"
    )
    if result.mismatched:
        print(f"MISMATCH: node0's blocks differ from the load's view at {result.mismatched}")
    if result.exhausted:
        print("NOTE: the load ran out of transactions; run again with a larger --txs")
    misses = [m for m, ok in (("tx/s", ok_rate), ("p50", ok_p50)) if not ok]
    print("PASS: all targets met" if not misses else f"BELOW TARGET: {', '.join(misses)}")


def summarize_py_spy(directory: Path, top: int = 30) -> None:
    """Inclusive share of samples per function, over every validator's samples."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for path in sorted(directory.glob("validator*.txt")):
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            count = int(count_text)
            total += count
            names = [frame.split(" (")[0] + " " + _where(frame) for frame in stack.split(";")]
            for name in set(names):
                inclusive[name] += count
            own[names[-1]] += count
    if not total:
        return
    print(f"--- py-spy, {total:,} samples of the {VALIDATORS} validators (% of busy time)")
    print(f"{'incl':>6} {'self':>6}  function")
    shown = 0
    for name, count in inclusive.most_common():
        if count > 0.99 * total:
            continue  # the entry points every sample runs under
        print(f"{count / total:>6.1%} {own[name] / total:>6.1%}  {name}")
        shown += 1
        if shown == top:
            break


def _where(frame: str) -> str:
    """The module of a py-spy frame `function (path/module.py:line)`."""
    inside = frame.rpartition(" (")[2].rstrip(")")
    return inside.rsplit("/", 1)[-1].split(":")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=5.0, help="load before the window, s")
    parser.add_argument("--rate", type=float, default=2_500.0, help="offered tx/s")
    parser.add_argument("--window", type=int, default=10_000, help="txs in flight at most")
    parser.add_argument("--txs", type=int, help="pre-signed txs (default: enough for --rate)")
    parser.add_argument("--tx-index", choices=("on", "off"), default="on", help="validators'")
    parser.add_argument("--profile", help="a directory: py-spy samples (or cProfile stats)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    args = parser.parse_args()
    if args.txs is None:
        args.txs = int(args.rate * (args.seconds + args.warmup) * 1.05)
    install_uvloop()
    print(
        f"consensus bench: {VALIDATORS} BFT validators (processes, tx index {args.tx_index}) "
        f"+ this load process, Python {sys.version.split()[0]}, "
        f"{len(os.sched_getaffinity(0))} CPUs; timeouts propose/vote/commit "
        f"{BENCH_TIMEOUTS_MS} ms; offered {args.rate:,.0f} tx/s, at most {args.window:,} in "
        f"flight; measuring {args.seconds:.0f} s after {args.warmup:.0f} s warm-up",
        flush=True,
    )
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="consbench-"))
    try:
        result, baseline = asyncio.run(run(args, root))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"baseline: BIP340 verification on one core, {baseline:,.0f} signatures/s")
    report(result, baseline, args)
    if args.keep:
        print(f"data directories kept in {root}")
    if args.profile:
        summarize_py_spy(Path(args.profile))
        for stats in sorted(Path(args.profile).glob("validator*.prof"))[:1]:
            print(f"--- cProfile of {stats.name}")
            pstats.Stats(str(stats)).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()

"""Chain sync on the real runtime: a fresh node catching up with 5,000 blocks, from 1 peer
and from 4, against the rate at which the same machine validates those blocks locally.

A PoA chain of --blocks blocks (--txs signed transfers each) is built once and cached as
a SQLite file in the temp directory. Then, each in its own process:

* Baseline (the fresh node's CPU): the blocks, read from that file beforehand, decoded
  and connected one by one into an empty ChainState on a new SQLite store: decode,
  context-free checks, every signature, the ledger, the state root, the writes. Blocks
  a second of that is the local validation rate.
* Sources (the other CPU): 1 or 4 nodes (`Node` + `P2PService` + `NodeDriver`), each on
  its own copy of the chain file, listening on 127.0.0.1.
* The syncing node (the baseline's CPU): a `Node` on an empty SQLite store with the real
  runtime (Noise sessions, uvloop when installed), which dials the sources and syncs:
  headers first, then bodies from every source. Its rate is blocks over the time from
  its first dial to its tip reaching the last block.

Both stores use the same SQLite `synchronous` setting (--synchronous, NORMAL by default:
WAL without an fsync per block, so the figures are CPU, not disk). The ratio of the sync
rate to the validation rate is the figure of merit (target >= 0.7): how much of the
validation speed survives the network, the transport and the download scheduling.

    python bench/sync.py [--blocks 5000] [--txs 10] [--peers 1,4] [--synchronous NORMAL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from meshchain.chainkit import ChainKit
from meshchain.core.chain.block import BLOCK_CODEC
from meshchain.core.chain.tx import VerifiedTx, verify_transaction
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.events import Action, NodeStarted, Send
from meshchain.core.node import Node, NodeConfig
from meshchain.core.peers.config import PeerConfig
from meshchain.core.store import MemoryStore
from meshchain.core.transport.identity import new_noise_static_key
from meshchain.core.transport.session import AdmissionPolicy
from meshchain.core.wire.messages import GetBlocks
from meshchain.runtime.driver import NodeDriver, install_uvloop
from meshchain.runtime.network import P2PConfig, P2PService
from meshchain.storage.sqlite import SqliteChainStore

HOST = "127.0.0.1"
SEED = 17
ACCOUNTS = 100
TARGET_RATIO = 0.7
SYNC_CAP = 300.0  # seconds: a sync that has not finished by then is reported as is
CHAIN_FORMAT = 1  # bump when the cached chain's shape changes


# --- the chain ---------------------------------------------------------------------------


def kit() -> ChainKit:
    return ChainKit(seed=SEED, accounts=ACCOUNTS)


def chain_file(blocks: int, txs: int) -> Path:
    """The chain as a SQLite file, built on first use and cached."""
    path = Path(tempfile.gettempdir()) / f"meshchain-bench-sync-v{CHAIN_FORMAT}-{blocks}-{txs}.db"
    if path.exists():
        return path
    started = time.perf_counter()
    the_kit = kit()
    chain = the_kit.chain()
    verifier = SignatureVerifier()
    nonces = [0] * ACCOUNTS
    for height in range(1, blocks + 1):
        vtxs: list[VerifiedTx] = []
        for i in range(txs):
            sender = (height * txs + i) % ACCOUNTS
            tx = the_kit.transfer(chain, sender, (sender + 1) % ACCOUNTS, 1, 500, nonces[sender])
            nonces[sender] += 1
            vtxs.append(verify_transaction(tx, verifier))
        update = the_kit.extend(chain, vtxs)
        assert update.connected, update.error
    store = chain.store
    assert isinstance(store, MemoryStore)
    building = path.with_suffix(".building")
    building.unlink(missing_ok=True)
    with SqliteChainStore(building, synchronous="NORMAL") as saved:
        saved.write(store.snapshot())
    building.rename(path)
    print(f"built {blocks:,} blocks of {txs} transactions in {time.perf_counter() - started:.1f} s")
    return path


def raw_blocks(path: Path) -> list[bytes]:
    """The chain's blocks in height order, as stored."""
    with SqliteChainStore(path) as store:
        chain = kit().chain(store)
        hashes = [chain.hash_at(h) for h in range(1, chain.height + 1)]
        return [store.get_block(h) or b"" for h in hashes if h is not None]


# --- the processes -------------------------------------------------------------------------


def validate(args: argparse.Namespace) -> None:
    """The baseline: connect every block into an empty chain, blocks per second."""
    blocks = raw_blocks(Path(args.validate))
    now = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        store = SqliteChainStore(Path(scratch) / "baseline.db", synchronous=args.synchronous)
        chain = kit().chain(store)
        started, cpu = time.perf_counter(), time.process_time()
        for raw in blocks:
            update = chain.add_block(BLOCK_CODEC.decode(raw), now, raw)
            assert update.connected, update.error
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        store.close()
    print(json.dumps({"blocks": len(blocks), "seconds": elapsed, "cpu_seconds": cpu}), flush=True)


def service(node: Node, key: SecretKey) -> tuple[NodeDriver, P2PService]:
    driver = NodeDriver(node)
    config = P2PConfig(
        identity=key,
        noise_static=new_noise_static_key(),
        policy=AdmissionPolicy(node.chain.chain_id, None),
    )
    return driver, P2PService(driver, config, random.Random(SEED))


def node_for(store: SqliteChainStore, key: SecretKey, seed: int) -> Node:
    config = NodeConfig(kit().genesis, peers=PeerConfig(node_id=key.public_key, discovery=False))
    return Node(config, store, random.Random(seed))


async def serve(args: argparse.Namespace) -> None:
    """Source nodes on copies of the chain, until stdin closes."""
    running = []
    ports = []
    for i, path in enumerate(args.serve.split(",")):
        key = SecretKey.generate(random.Random(SEED + 100 + i))
        store = SqliteChainStore(path, synchronous=args.synchronous)
        driver, p2p = service(node_for(store, key, SEED + i), key)
        ports.append((await p2p.listen(HOST, 0))[1])
        driver.feed(NodeStarted())
        running.append((driver, p2p, store))
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    for driver, p2p, store in running:
        driver.stop()
        await p2p.close()
        store.close()


async def sync(args: argparse.Namespace) -> None:
    """The fresh node: dial the sources, sync to `--target`, report the time."""
    key = SecretKey.generate(random.Random(SEED + 1))
    store = SqliteChainStore(args.db, synchronous=args.synchronous)
    node = node_for(store, key, SEED)
    driver, p2p = service(node, key)
    asked: Counter[str] = Counter()

    def count(action: Action) -> None:
        if isinstance(action, Send) and isinstance(action.message, GetBlocks):
            asked[action.peer] += len(action.message.hashes)

    driver.observers.append(count)
    await p2p.listen(HOST, 0)
    driver.feed(NodeStarted())
    started, cpu = time.perf_counter(), time.process_time()
    for port in args.sync.split(","):
        await p2p.dial(HOST, int(port))
    while node.chain.height < args.target and time.perf_counter() - started < SYNC_CAP:
        await asyncio.sleep(0.005)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    result = {
        "height": node.chain.height,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "blocks_per_peer": sorted(asked.values(), reverse=True),
    }
    driver.stop()
    await p2p.close()
    store.close()
    print(json.dumps(result), flush=True)


# --- the measurement -----------------------------------------------------------------------


def child(flags: list[str], cpu: int | None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *flags],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    if cpu is not None:
        os.sched_setaffinity(process.pid, {cpu})
    return process


def answer(process: subprocess.Popen[bytes]) -> object:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip():
        raise SystemExit(f"a bench process (pid {process.pid}) ended without an answer")
    return json.loads(line)


def baseline(path: Path, common: list[str], cpu: int | None) -> tuple[float, float]:
    """The local validation rate: blocks per wall second and per CPU second."""
    process = child(["--validate", str(path), *common], cpu)
    base = answer(process)
    process.wait()
    assert isinstance(base, dict)
    return base["blocks"] / base["seconds"], base["blocks"] / base["cpu_seconds"]


def sync_run(
    path: Path, peers: int, args: argparse.Namespace, cpus: tuple[int | None, int | None]
) -> dict[str, object]:
    """One sync of the whole chain from `peers` sources; the syncing node's report."""
    node_cpu, source_cpu = cpus
    common = ["--synchronous", args.synchronous]
    with tempfile.TemporaryDirectory() as scratch:
        copies = []
        for i in range(peers):
            copies.append(Path(scratch) / f"source-{i}.db")
            shutil.copyfile(path, copies[-1])
        sources = child(["--serve", ",".join(map(str, copies)), *common], source_cpu)
        try:
            ports = answer(sources)
            assert isinstance(ports, list)
            fresh = str(Path(scratch) / "fresh.db")
            flags = ["--sync", ",".join(map(str, ports)), "--target", str(args.blocks)]
            syncer = child([*flags, "--db", fresh, *common], node_cpu)
            result = answer(syncer)
            syncer.wait()
        finally:
            assert sources.stdin is not None
            sources.stdin.close()
            sources.wait(timeout=30)
    assert isinstance(result, dict)
    return result


def measure(args: argparse.Namespace) -> None:
    """Paired runs: the local validation rate, then a sync, for each number of peers (the
    machine's CPUs may be shared, so each sync has its baseline measured right before)."""
    cpus = sorted(os.sched_getaffinity(0))
    placement = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)
    path = chain_file(args.blocks, args.txs)
    common = ["--synchronous", args.synchronous]
    misses = []
    for peers in [int(p) for p in args.peers.split(",")]:
        local, local_cpu = baseline(path, common, placement[0])
        result = sync_run(path, peers, args, placement)
        height = int(str(result["height"]))
        rate = height / float(str(result["seconds"]))
        cpu_rate = height / float(str(result["cpu_seconds"]))
        ratio = rate / local
        ok = height == args.blocks and ratio >= TARGET_RATIO
        print(
            f"from {peers} peer{'s' if peers > 1 else ''}: local validation {local:,.0f} "
            f"blocks/s ({local_cpu:,.0f} per CPU-s); sync {height:,} blocks at {rate:,.0f} "
            f"blocks/s ({cpu_rate:,.0f} per node CPU-s); ratio {ratio:.2f} wall, "
            f"{cpu_rate / local_cpu:.2f} CPU (target >= {TARGET_RATIO} wall) "
            f"{'PASS' if ok else 'BELOW TARGET'}; blocks asked per peer "
            f"{result['blocks_per_peer']}",
            flush=True,
        )
        if not ok:
            misses.append(f"{peers} peer(s)")
    print("PASS: all targets met" if not misses else "BELOW TARGET: " + ", ".join(misses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5_000, help="blocks in the chain")
    parser.add_argument("--txs", type=int, default=10, help="transactions per block")
    parser.add_argument("--peers", default="1,4", help="source counts to sync from")
    parser.add_argument(
        "--synchronous", default="NORMAL", choices=["NORMAL", "FULL"], help="SQLite mode"
    )
    parser.add_argument("--validate", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--sync", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    install_uvloop()
    if args.validate:
        validate(args)
    elif args.serve:
        asyncio.run(serve(args))
    elif args.sync:
        asyncio.run(sync(args))
    else:
        loop_name = type(asyncio.get_event_loop_policy()).__module__.split(".")[0]
        print(
            f"sync bench: {loop_name} loop, Python {sys.version.split()[0]}, "
            f"{len(os.sched_getaffinity(0))} CPUs; {args.blocks:,} blocks of {args.txs} "
            f"transactions, SQLite synchronous={args.synchronous}",
            flush=True,
        )
        measure(args)


if __name__ == "__main__":
    main()

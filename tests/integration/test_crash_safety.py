"""Crash safety: SIGKILL a block importer at random points; no reported commit is ever lost.

`crash_worker.py` imports blocks into one SQLite database (synchronous=FULL) and prints a
`committed` line only after `add_block` returned CONNECTED. Each round starts it on the
same file, waits for at least one new commit, waits a random extra moment, SIGKILLs it,
then reopens the store here (`ChainState` itself checks the stored accounts against the
tip's state root) and checks that every block ever reported is on the main chain and
that the ledger, undo data and transaction index agree with the blocks.

SIGKILL tests atomicity (a half-written batch never shows), not fsync: the kernel keeps
what the process wrote. Set MESHCHAIN_CRASH_SEED to replay a run's kill delays.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
from crash_worker import make_kit

from meshchain.chainkit import KIT_REWARD, ChainKit
from meshchain.core.chain.tx import compute_txid
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.store import TxLocation
from meshchain.errors import StoreError
from meshchain.storage.sqlite import SqliteChainStore

WORKER = Path(__file__).with_name("crash_worker.py")
ROUNDS = 30
FINAL_COMMITS = 5  # blocks the last, unkilled-until-then run must add on top
LINE_DEADLINE_S = 30.0  # generous: a slow, loaded machine must not fail the test
EXIT_DEADLINE_S = 10.0
MAX_KILL_DELAY_S = 0.15
SEED_ENV = "MESHCHAIN_CRASH_SEED"


@dataclass(frozen=True)
class Commit:
    height: int
    block_hash: bytes
    state_root: bytes


@dataclass(frozen=True)
class BlockTxs:
    """What the checks need of one stored block: its transactions' ids and endpoints."""

    txids: tuple[bytes, ...]
    senders: tuple[bytes, ...]
    recipients: tuple[bytes, ...]


@dataclass(frozen=True)
class CheckedTip:
    height: int
    block_hash: bytes
    stored_tip_height: int  # the tip as stored, before opening connected any pending block


class Worker:
    """One `crash_worker.py` process; its stdout lines arrive through a reader thread."""

    def __init__(self, db_path: Path, seed: int, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._eof = False
        try:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), str(db_path), str(seed)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except BaseException:
            self._stderr.close()
            raise
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def __enter__(self) -> Worker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _pump(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        for line in stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def next_line(self, deadline: float) -> str | None:
        """The next complete line, or None at end of output; fails past the deadline."""
        if self._eof:
            return None
        try:
            raw = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"worker {self.process.pid} printed nothing in time: {self.stderr()}")
        if raw is None:
            self._eof = True
            return None
        if not raw.endswith(b"\n"):
            return None  # cut off by the kill: never reported
        return raw.decode().rstrip("\n")

    def kill(self) -> int:
        """SIGKILL the worker (if still running) and reap it; returns its exit status."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=EXIT_DEADLINE_S)

    def rest(self, deadline: float) -> list[str]:
        """Every complete line still in the pipe (call after `kill`)."""
        lines: list[str] = []
        while not self._eof:
            line = self.next_line(deadline)
            if line is not None:
                lines.append(line)
        return lines

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=EXIT_DEADLINE_S)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            self._reader.join(timeout=EXIT_DEADLINE_S)
            self._stderr.close()


def parse_ready(line: str | None) -> tuple[int, bytes]:
    assert line is not None, "the worker exited before it was ready"
    word, height, tip = line.split()
    assert word == "ready", line
    return int(height), bytes.fromhex(tip)


def parse_commit(line: str) -> Commit:
    word, height, block_hash_hex, state_root_hex = line.split()
    assert word == "committed", line
    return Commit(int(height), bytes.fromhex(block_hash_hex), bytes.fromhex(state_root_hex))


def record(reported: dict[int, Commit], commit: Commit) -> None:
    known = reported.get(commit.height)
    assert known is None, f"height {commit.height} was reported twice: {known} and {commit}"
    reported[commit.height] = commit


def check_store(
    db_path: Path,
    kit: ChainKit,
    reported: dict[int, Commit],
    cache: dict[bytes, BlockTxs],
) -> CheckedTip:
    """Reopen the store and check it against every reported commit and against itself."""
    store = SqliteChainStore(db_path)
    try:
        stored_tip = store.tip()
        assert stored_tip is not None, "the store has no tip"
        try:
            chain = kit.chain(store)  # checks the accounts against the tip's state root
        except StoreError as exc:
            pytest.fail(f"the store did not reopen consistently: {exc}")
        stored_entry = chain.entry(stored_tip)
        assert stored_entry is not None

        top = max(reported, default=0)
        assert chain.height >= top, f"tip {chain.height} is below reported height {top}"
        for height, commit in reported.items():
            assert chain.hash_at(height) == commit.block_hash, f"reported block {height} lost"
            header = chain.header(commit.block_hash)
            assert header is not None
            assert header.state_root == commit.state_root, f"state root of {height} differs"

        ledger = chain.ledger
        assert ledger.state_root() == chain.tip_header.state_root
        assert ledger.total_balance() == ledger.expected_supply(), "supply invariant broken"
        assert ledger.minted == chain.height * KIT_REWARD
        for account in store.accounts():
            assert account.balance >= 0, f"negative balance: {account}"

        # No side branches in this test: opening connects any block stored but not yet
        # connected, so every indexed block is on the main chain.
        entries = list(store.block_entries())
        assert len(entries) == chain.height + 1
        for entry in entries:
            assert not entry.invalid, f"block marked invalid: {entry}"
            assert chain.is_main(entry.hash), f"block off the main chain: {entry}"

        txs_total = 0
        addresses_total = 0
        nonces: Counter[bytes] = Counter()
        for height in range(1, chain.height + 1):
            this_hash = chain.hash_at(height)
            assert this_hash is not None
            assert store.get_undo(this_hash) is not None, f"no undo data for block {height}"
            block_txs = cache.get(this_hash)
            if block_txs is None:
                block = chain.block(this_hash)
                assert block is not None, f"block {height} is missing"
                bodies = [tx.body for tx in block.transactions]
                block_txs = BlockTxs(
                    tuple(compute_txid(body) for body in bodies),
                    tuple(address_from_public_key(body.sender) for body in bodies),
                    tuple(body.recipient for body in bodies),
                )
                cache[this_hash] = block_txs
            for position, txid in enumerate(block_txs.txids):
                found = store.find_tx(txid)
                assert found == TxLocation(txid, this_hash, height, position), (
                    f"tx {txid.hex()} of block {height} is indexed as {found}"
                )
            nonces.update(block_txs.senders)
            txs_total += len(block_txs.txids)
            addresses_total += sum(
                len({sender, recipient})
                for sender, recipient in zip(block_txs.senders, block_txs.recipients)
            )
        for sender, sent in nonces.items():
            assert ledger.account_nonce(sender) == sent, "a nonce disagrees with the blocks"

        # Nothing indexed beyond the main chain's transactions: no rows of a torn batch.
        uri = f"{db_path.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as raw:
            counts = [
                raw.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("txs", "tx_addresses", "undo")
            ]
        assert counts == [txs_total, addresses_total, chain.height]
        return CheckedTip(chain.height, chain.tip_hash, stored_entry.height)
    finally:
        store.close()


def run_worker(
    db_path: Path, seed: int, stderr_path: Path, expected: CheckedTip, wanted: int, delay: float
) -> list[Commit]:
    """Start a worker on the checked tip, wait for `wanted` new commits and `delay`
    seconds more, SIGKILL it and return every commit it reported, in order."""
    with Worker(db_path, seed, stderr_path) as worker:
        deadline = time.monotonic() + LINE_DEADLINE_S
        ready = parse_ready(worker.next_line(deadline))
        assert ready == (expected.height, expected.block_hash), "worker loaded another tip"
        commits: list[Commit] = []
        while len(commits) < wanted:
            line = worker.next_line(deadline)
            if line is None:
                pytest.fail(f"worker exited (status {worker.kill()}): {worker.stderr()}")
            commits.append(parse_commit(line))
        time.sleep(delay)
        status = worker.kill()
        assert status == -signal.SIGKILL, f"worker ended by itself: {worker.stderr()}"
        commits += [parse_commit(line) for line in worker.rest(time.monotonic() + EXIT_DEADLINE_S)]
    heights = [commit.height for commit in commits]
    first = expected.height + 1
    assert heights == list(range(first, first + len(heights))), "worker did not resume on tip"
    return commits


@pytest.mark.slow
def test_sigkilled_importer_never_loses_a_reported_block(tmp_path: Path) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))
    print(f"crash-safety kill seed: {SEED_ENV}={seed}")
    rng = random.Random(seed)
    db_path = tmp_path / "chain.db"
    kit = make_kit()
    reported: dict[int, Commit] = {}
    cache: dict[bytes, BlockTxs] = {}
    genesis = kit.chain()
    tip = CheckedTip(0, genesis.tip_hash, 0)
    pending_connected = 0  # rounds killed between storing a block and connecting it
    unreported = 0  # rounds killed after a commit but before its line went out
    started = time.monotonic()

    for round_ in range(ROUNDS):
        delay = rng.uniform(0, MAX_KILL_DELAY_S)
        stderr_path = tmp_path / f"worker-{round_}.err"
        for commit in run_worker(db_path, rng.randrange(2**32), stderr_path, tip, 1, delay):
            record(reported, commit)
        print(f"round {round_}: killed {delay * 1000:.0f} ms after commit {max(reported)}")
        tip = check_store(db_path, kit, reported, cache)
        pending_connected += tip.height > tip.stored_tip_height
        unreported += tip.stored_tip_height > max(reported)

    # After the last kill the chain still grows: a worker resumes and builds on top.
    last = tip
    for commit in run_worker(
        db_path, rng.randrange(2**32), tmp_path / "worker-final.err", tip, FINAL_COMMITS, 0.0
    ):
        record(reported, commit)
    tip = check_store(db_path, kit, reported, cache)
    assert tip.height >= last.height + FINAL_COMMITS
    print(
        f"{ROUNDS} kills, {tip.height} blocks, {sum(len(c.txids) for c in cache.values())} txs"
        f" in {time.monotonic() - started:.1f} s; killed between store and connect:"
        f" {pending_connected}; committed but unreported: {unreported}"
    )

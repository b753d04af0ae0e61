"""A fresh `meshchain node` process catches up with a running network of node processes.

Three data directories made by `meshchain init` share one private genesis (all three
node keys are members; blocks every 100 ms so the chain grows fast). A producer and a
follower run until the chain is 40 blocks long; then a fresh node starts with both as
its peers. It must sync headers first and bodies from both, report that it caught up,
and hold, once stopped, the very blocks the producer made.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec

from meshchain.config import open_datadir, save_genesis
from meshchain.core.chain.chainstate import ChainState
from meshchain.core.chain.genesis import Member
from meshchain.core.consensus import engine_for
from meshchain.storage.sqlite import SqliteChainStore

DEADLINE = 90.0  # generous: a shared 2-core machine can be slow
HEAD_START = 40  # blocks the network has before the fresh node starts
BLOCK_INTERVAL_MS = 100


def meshchain(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshchain", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NodeProcess:
    """A running `meshchain node`, its stderr collected on a thread."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meshchain", "node", "--datadir", str(home)],
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for(self, needle: str, deadline: float) -> str:
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if needle in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {needle!r} from {self.home.name}:\n" + "".join(self.lines))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=DEADLINE)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def chain_of(home: Path) -> tuple[ChainState, SqliteChainStore]:
    datadir = open_datadir(home)
    genesis = datadir.genesis()
    store = SqliteChainStore(datadir.database)
    return ChainState(genesis, engine_for(genesis), store), store


def make_network(tmp_path: Path) -> dict[str, Path]:
    ports = {name: free_port() for name in ("producer", "follower", "fresh")}
    homes = {name: tmp_path / name for name in ports}
    peers = {"producer": [], "follower": ["producer"], "fresh": ["producer", "follower"]}
    for name, home in homes.items():
        args = ["init", "--datadir", str(home), "--listen", f"127.0.0.1:{ports[name]}"]
        args += ["--api", f"127.0.0.1:{free_port()}"]  # each its own API port
        for peer in peers[name]:
            args += ["--peer", f"127.0.0.1:{ports[peer]}"]
        meshchain(*args)
    producer = open_datadir(homes["producer"]).genesis()
    members = [
        Member(open_datadir(home).node_key().public_key, name) for name, home in homes.items()
    ]
    consensus = msgspec.structs.replace(producer.consensus, block_interval_ms=BLOCK_INTERVAL_MS)
    shared = msgspec.structs.replace(producer, members=members, consensus=consensus)
    for name, home in homes.items():
        save_genesis(home / "genesis.toml", shared)
        if name != "producer":  # one validator: the producer's key is the genesis one
            config = home / "config.toml"
            text = config.read_text()
            config.write_text(
                text.replace('validator_key = "keys/validator.key"', 'validator_key = ""')
            )
    return homes


def test_a_fresh_node_process_catches_up_with_a_running_network(tmp_path: Path) -> None:
    homes = make_network(tmp_path)
    deadline = time.monotonic() + DEADLINE
    running = [NodeProcess(homes["producer"]), NodeProcess(homes["follower"])]
    try:
        running[0].wait_for(f"produced block {HEAD_START} ", deadline)
        running[1].wait_for(f"accepted block {HEAD_START} ", deadline)
        fresh = NodeProcess(homes["fresh"])
        running.append(fresh)
        caught_up = fresh.wait_for("sync: caught up at height", deadline)
        reached = int(caught_up.split("caught up at height")[1].split()[0])
        assert reached >= HEAD_START
        for node in running:
            assert not any("Traceback" in line for line in node.lines), "".join(node.lines)
    finally:
        statuses = [node.stop() for node in running]
    assert statuses == [0] * len(running)
    fresh_chain, fresh_store = chain_of(homes["fresh"])
    producer_chain, producer_store = chain_of(homes["producer"])
    try:
        assert fresh_chain.height >= reached
        for height in range(reached + 1):
            assert fresh_chain.hash_at(height) == producer_chain.hash_at(height), height
        assert fresh_chain.ledger.total_balance() == fresh_chain.ledger.expected_supply()
    finally:
        fresh_store.close()
        producer_store.close()

"""Real `meshchain node` processes on 127.0.0.x: data directories for a shared genesis,
start, SIGKILL, restart, and reading each node's log and store.

Each node gets its own loopback address (127.0.0.<10 + i>) so per-IP limits see
separate hosts, and names every other node as a persistent peer.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from meshchain.cli.setup import create_datadir, make_genesis
from meshchain.config import open_datadir, save_config
from meshchain.core.chain.chainstate import ChainState
from meshchain.core.chain.genesis import ChainMode, Genesis
from meshchain.core.consensus import engine_for
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey
from meshchain.storage.sqlite import SqliteChainStore

DEADLINE = 120.0  # generous: a shared 2-core machine can be slow
HEIGHT_LINE = re.compile(r"(?:produced|accepted) block (\d+) ")


@dataclass
class NodeProcess:
    home: Path
    host: str
    port: int
    log_level: str = "info"
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        log = self.home / f"node-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "meshchain",
                    "node",
                    "--datadir",
                    str(self.home),
                    "--log-level",
                    self.log_level,
                ],
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=DEADLINE)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def log_text(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs)

    def height(self) -> int:
        """The highest block this node reported connecting, from its log."""
        heights = [int(m.group(1)) for m in HEIGHT_LINE.finditer(self.log_text())]
        return max(heights, default=0)

    def chain(self, genesis: Genesis) -> tuple[ChainState, SqliteChainStore]:
        store = SqliteChainStore(open_datadir(self.home).database)
        return ChainState(genesis, engine_for(genesis), store), store


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class ProcessNet:
    genesis: Genesis
    nodes: list[NodeProcess]

    def wait(self, condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
        end = time.monotonic() + deadline
        while not condition():
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise AssertionError(f"{node.home.name} exited:\n{node.log_text()[-3000:]}")
            if time.monotonic() > end:
                tails = "\n".join(f"{n.home.name}: {n.log_text()[-1500:]}" for n in self.nodes)
                raise AssertionError(f"timed out waiting for {what}\n{tails}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()


@contextlib.contextmanager
def process_network(
    root: Path,
    mode: ChainMode,
    validators: int,
    observers: int = 0,
    *,
    bft_timeouts_ms: tuple[int, int, int] = (1_000, 500, 200),
    block_interval_ms: int | None = None,
    log_level: str = "info",
    started: int | None = None,
) -> Iterator[ProcessNet]:
    """Data directories for `validators` + `observers` nodes of one chain; the first
    `started` (default: all) are started, the rest wait for the test; every process is
    stopped when the block ends."""
    count = validators + observers
    validator_keys = [SecretKey.generate() for _ in range(validators)]
    node_keys = [SecretKey.generate() for _ in range(count)]
    wallet = SecretKey.generate()
    genesis = make_genesis(
        mode,
        chain_name=f"proc-{mode.value}",
        validators=validator_keys,
        members=node_keys,
        allocations=[(address_from_public_key(wallet.public_key), 10**15)],
        block_interval_ms=block_interval_ms,
        bft_timeouts_ms=bft_timeouts_ms,
    )
    hosts = [f"127.0.0.{10 + i}" for i in range(count)]
    ports = [free_port(host) for host in hosts]
    nodes = []
    for index in range(count):
        home = root / f"node{index}"
        key = validator_keys[index] if index < validators else None
        create_datadir(home, genesis, node_keys[index], key)
        datadir = open_datadir(home)
        config = datadir.config
        config.p2p.listen = f"{hosts[index]}:{ports[index]}"
        config.p2p.peers = [f"{hosts[o]}:{ports[o]}" for o in range(count) if o != index]
        config.p2p.discovery = False
        save_config(home, config)
        nodes.append(NodeProcess(home, hosts[index], ports[index], log_level))
    net = ProcessNet(genesis, nodes)
    try:
        for node in nodes[:started]:
            node.start()
        yield net
    finally:
        net.stop()

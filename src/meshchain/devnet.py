"""A local network of real `meshchain node` processes for one genesis, on 127.0.0.x.

Tests and benchmarks share it: data directories for a genesis, each node on its own
loopback address (127.0.0.<10 + i>, so per-IP limits see separate hosts) naming every
other node as a persistent peer, then start, SIGKILL, restart, stop, and read each
node's log and store. A node can run under cProfile (`NodeProcess.profile`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meshchain.cli.setup import create_datadir
from meshchain.config import open_datadir, save_config
from meshchain.core.chain.chainstate import ChainState
from meshchain.core.chain.genesis import Genesis
from meshchain.core.consensus import engine_for
from meshchain.core.crypto.keys import SecretKey
from meshchain.runtime.miner import die_with_parent
from meshchain.storage.sqlite import SqliteChainStore

# Seconds to wait for a condition or a process: generous, a shared 2-core machine can be
# slow (a node's start alone, imports included, takes about a second there).
DEADLINE = 120.0
HEIGHT_LINE = re.compile(r"(?:produced|accepted) block (\d+) ")
FIRST_HOST = 10  # node i listens on 127.0.0.<FIRST_HOST + i>


@dataclass
class NodeProcess:
    home: Path
    host: str
    port: int
    log_level: str = "info"
    api_port: int = 0  # the JSON-RPC API's, on `host`
    profile: Path | None = None  # run under cProfile, the stats written here on exit
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        log = self.home / f"node-{len(self.logs)}.log"
        self.logs.append(log)
        profiler = [] if self.profile is None else ["-m", "cProfile", "-o", str(self.profile)]
        command = [sys.executable, *profiler, "-m", "meshchain", "node"]
        command += ["--datadir", str(self.home), "--log-level", self.log_level]
        # A node outlives no devnet, test or bench that started it, even one SIGKILLed.
        on_orphaned = functools.partial(die_with_parent, os.getpid(), signal.SIGTERM)
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=sink, preexec_fn=on_orphaned
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
        """The node's chain read from its store (stop the node first); close the store."""
        home = open_datadir(self.home)
        store = SqliteChainStore(home.database, tx_index=home.config.storage.tx_index)
        return ChainState(genesis, engine_for(genesis), store), store


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class ProcessNet:
    genesis: Genesis
    nodes: list[NodeProcess]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

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


def create_devnet(
    root: Path,
    genesis: Genesis,
    node_keys: Sequence[SecretKey],
    validator_keys: Sequence[SecretKey],
    *,
    extra_peers: Sequence[str] = (),
    log_level: str = "info",
    tx_index: bool = True,
    base_port: int | None = None,
) -> ProcessNet:
    """Data directories under `root` for one node per node key, not started; node i
    validates with `validator_keys[i]` if there is one. Every node keeps connected to
    all the others and to `extra_peers` (HOST:PORT, e.g. a benchmark's load peers);
    `tx_index` is each node's `[storage] tx_index`; each node's `[api] network` names the
    others' APIs (the dashboard's whole-network view). With `base_port` P node i listens
    on P + 2i and serves its API on P + 2i + 1 (predictable ports for firewalls and
    scripts); without, free ports."""
    count = len(node_keys)
    hosts = [f"127.0.0.{FIRST_HOST + i}" for i in range(count)]
    if base_port is None:
        ports = [free_port(host) for host in hosts]
        api_ports = [free_port(host) for host in hosts]
    else:
        ports = [base_port + 2 * i for i in range(count)]
        api_ports = [base_port + 2 * i + 1 for i in range(count)]
    apis = [f"http://{hosts[i]}:{api_ports[i]}" for i in range(count)]
    nodes = []
    for index in range(count):
        home = root / f"node{index}"
        key = validator_keys[index] if index < len(validator_keys) else None
        create_datadir(home, genesis, node_keys[index], key)
        config = open_datadir(home).config
        config.p2p.listen = f"{hosts[index]}:{ports[index]}"
        config.p2p.peers = [f"{hosts[o]}:{ports[o]}" for o in range(count) if o != index]
        config.p2p.peers += list(extra_peers)
        config.p2p.discovery = False
        config.storage.tx_index = tx_index
        config.api.listen = f"{hosts[index]}:{api_ports[index]}"
        config.api.network = apis[:index] + apis[index + 1 :]
        save_config(home, config)
        nodes.append(
            NodeProcess(home, hosts[index], ports[index], log_level, api_port=api_ports[index])
        )
    return ProcessNet(genesis, nodes)

"""The command line as a user meets it: real processes, real files, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest
from clikit import DEADLINE, meshchain

from meshchain.config import open_datadir, save_genesis
from meshchain.core.chain.chainstate import ChainState
from meshchain.core.chain.genesis import Member
from meshchain.core.consensus import engine_for
from meshchain.core.crypto.address import address_from_public_key, decode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.storage.sqlite import SqliteChainStore


def test_init_writes_a_data_directory_with_private_keys(tmp_path: Path) -> None:
    home = tmp_path / "node"
    result = meshchain("init", "--datadir", str(home), "--mode", "private")
    assert result.returncode == 0, result.stderr
    for name in ("genesis.toml", "config.toml", "keys/node.key", "keys/validator.key"):
        assert (home / name).exists(), name
    for key in (home / "keys").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    datadir = open_datadir(home)
    genesis = datadir.genesis()
    validator = datadir.validator_key()
    assert validator is not None
    assert [v.public_key for v in genesis.validators] == [validator.public_key]
    assert [m.node_key for m in genesis.members] == [datadir.node_key().public_key]
    wallet = SecretKey.from_hex((home / "keys/wallet.key").read_text())
    assert genesis.allocations[0].address == address_from_public_key(wallet.public_key)
    again = meshchain("init", "--datadir", str(home))
    assert again.returncode != 0
    assert "already holds a node" in again.stderr


def test_keys_new_prints_a_valid_address_and_protects_the_file(tmp_path: Path) -> None:
    printed = json.loads(meshchain("keys", "new").stdout)
    key = SecretKey.from_hex(printed["secret_key"])
    assert decode_address(printed["address"]) == address_from_public_key(key.public_key)
    out = tmp_path / "k.key"
    written = json.loads(meshchain("keys", "new", "--out", str(out)).stdout)
    assert "secret_key" not in written
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert meshchain("keys", "new", "--out", str(out)).returncode != 0


@pytest.mark.parametrize(
    ("mode", "log_format"), [("private", "human"), ("public", "human"), ("consortium", "json")]
)
def test_node_makes_blocks_and_stops_cleanly_on_sigterm(
    tmp_path: Path, mode: str, log_format: str
) -> None:
    """A private node signs its blocks; a public one mines them (in a worker process); a
    consortium's only validator commits them by BFT votes (its own are all it needs).
    With --log-format json every line it writes is one JSON record, to the last."""
    home = tmp_path / "node"
    assert meshchain("init", "--datadir", str(home), "--mode", mode).returncode == 0
    command = ["node", "--datadir", str(home), "--log-format", log_format]
    process = subprocess.Popen(
        [sys.executable, "-m", "meshchain", *command],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + DEADLINE
        lines = []
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "produced block 2 " in line or not line:
                break
        assert any("produced block 2 " in line for line in lines), "".join(lines)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE) == 0
        lines += process.stderr.readlines()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if log_format == "json":
        records = [json.loads(line) for line in lines if line]
        assert all(set(r) == {"time", "level", "logger", "message"} for r in records), lines
        assert records[-1]["message"].startswith("stopped at height")
    datadir = open_datadir(home)
    genesis = datadir.genesis()
    store = SqliteChainStore(datadir.database)
    chain = ChainState(genesis, engine_for(genesis), store)
    assert chain.height >= 2
    assert chain.ledger.total_balance() == chain.ledger.expected_supply()
    store.close()


def test_demo_runs_a_chain_with_traffic_and_resumes(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    args = ["demo", "--datadir", str(home), "--blocks", "3", "--block-interval", "0.3"]
    first = meshchain(*args)
    assert first.returncode == 0, first.stderr
    assert "height 3," in first.stdout
    assert "supply conserved" in first.stdout
    second = meshchain(*args)
    assert second.returncode == 0, second.stderr
    assert "height 6," in second.stdout


def test_a_bad_config_key_is_named(tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert meshchain("init", "--datadir", str(home)).returncode == 0
    config = home / "config.toml"
    config.write_text(config.read_text() + "\n[p2p_typo]\nlisten = 1\n")
    result = meshchain("node", "--datadir", str(home))
    assert result.returncode == 1
    assert "p2p_typo" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_damaged_genesis_file_is_reported_not_a_traceback(tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert meshchain("init", "--datadir", str(home)).returncode == 0
    genesis = home / "genesis.toml"
    genesis.write_text(genesis.read_text().replace('mode = "private"', 'mode = "secret"'))
    result = meshchain("node", "--datadir", str(home))
    assert result.returncode == 1
    assert "mode" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.path.exists(home / "config.toml")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LogWatcher:
    """Collects a process's stderr lines on a thread, so waiting can have a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.lines.append(line)

    def wait_for(self, needle: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not any(needle in line for line in list(self.lines)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} in:\n" + "".join(self.lines))
            time.sleep(0.05)


def test_two_node_processes_connect_and_the_follower_gets_blocks(tmp_path: Path) -> None:
    producer_port, follower_port = free_port(), free_port()
    producer_home, follower_home = tmp_path / "a", tmp_path / "b"
    assert (
        meshchain(
            "init",
            "--datadir",
            str(producer_home),
            "--listen",
            f"127.0.0.1:{producer_port}",
            "--api",
            f"127.0.0.1:{free_port()}",
        ).returncode
        == 0
    )
    assert (
        meshchain(
            "init",
            "--datadir",
            str(follower_home),
            "--listen",
            f"127.0.0.1:{follower_port}",
            "--peer",
            f"127.0.0.1:{producer_port}",
            "--api",
            f"127.0.0.1:{free_port()}",
        ).returncode
        == 0
    )
    # One network: the producer's genesis, with both nodes as members.
    producer, follower = open_datadir(producer_home), open_datadir(follower_home)
    genesis = producer.genesis()
    members = [*genesis.members, Member(follower.node_key().public_key, "follower")]
    shared = msgspec.structs.replace(genesis, members=members)
    for home in (producer_home, follower_home):
        save_genesis(home / "genesis.toml", shared)
    (follower_home / "config.toml").write_text(
        (follower_home / "config.toml")
        .read_text()
        .replace('validator_key = "keys/validator.key"', 'validator_key = ""')
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "meshchain", "node", "--datadir", str(home)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for home in (producer_home, follower_home)
    ]
    try:
        producer_log, follower_log = (LogWatcher(process) for process in processes)
        follower_log.wait_for("session with")
        follower_log.wait_for("accepted block 2 ")
        producer_log.wait_for("session with")
        assert not any("Traceback" in line for line in producer_log.lines + follower_log.lines)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(timeout=DEADLINE) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

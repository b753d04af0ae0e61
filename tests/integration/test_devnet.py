"""`meshchain devnet` as a user runs it: real node processes, demo traffic through the
API, a clean stop on SIGTERM with no process left behind, and a resume."""

from __future__ import annotations

import contextlib
import time
import urllib.error
from pathlib import Path

from clikit import (
    DEADLINE,
    POLL_S,
    alive,
    heights,
    layout,
    rpc_call,
    running_devnet,
    stop_devnet,
    wait_until,
)

from meshchain.cli.devnet import WALLETS_DIR
from meshchain.config import read_key
from meshchain.core.crypto.address import address_from_public_key, encode_address

NODES = 3
FIRST_HEIGHT = 3  # blocks the first run must reach
MORE_BLOCKS = 2  # blocks the resumed run must add


def _confirmed_transfers(root: Path) -> int:
    """Demo transfers confirmed on chain: the wallets' confirmed nonces, summed."""
    written = layout(root)
    assert written is not None
    url = written["nodes"][0]["api"]
    total = 0
    for path in sorted((root / WALLETS_DIR).glob("*.key")):
        address = encode_address(address_from_public_key(read_key(path).public_key))
        with contextlib.suppress(OSError, urllib.error.URLError):
            total += int(rpc_call(url, "account", {"address": address})["nonce"])
    return total


def test_devnet_runs_traffic_stops_on_sigterm_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "net"
    with running_devnet(root, "--nodes", str(NODES), "--mode", "consortium") as devnet:
        wait_until(lambda: layout(root) is not None, "devnet.json", devnet)
        written = layout(root)
        assert written is not None
        assert [n["name"] for n in written["nodes"]] == [f"node{i}" for i in range(NODES)]
        for node in written["nodes"]:
            assert Path(node["datadir"]).parent == root.resolve()
            assert node["p2p"].startswith("127.0.0.")
        wait_until(lambda: min(heights(root)) >= FIRST_HEIGHT, "blocks on every node", devnet)
        wait_until(lambda: _confirmed_transfers(root) > 0, "a confirmed demo transfer", devnet)
        chain_id = rpc_call(written["nodes"][0]["api"], "status")["node_info"]["network"]
        stop_devnet(devnet, root)
    assert max(heights(root)) == -1  # nothing answers any more
    heights_before = _stored_heights(root)

    with running_devnet(root) as devnet:
        wait_until(
            lambda: min(heights(root)) >= max(heights_before) + MORE_BLOCKS,
            "the resumed chain to grow",
            devnet,
        )
        resumed = layout(root)
        assert resumed is not None
        assert rpc_call(resumed["nodes"][0]["api"], "status")["node_info"]["network"] == chain_id
        stop_devnet(devnet, root)


def _stored_heights(root: Path) -> list[int]:
    """Heights the nodes logged before stopping (the API is gone with them)."""
    stored = []
    for log in sorted(root.glob("node*/node-*.log")):
        lines = [line for line in log.read_text().splitlines() if "stopped at height" in line]
        assert lines, f"{log} has no clean stop"
        stored.append(int(lines[-1].rsplit(" ", 1)[1]))
    return stored


def test_a_sigkilled_devnet_leaves_no_node_running(tmp_path: Path) -> None:
    """Nothing can clean up after SIGKILL but the kernel: each node is told to stop
    (SIGTERM) when the process that started it dies."""
    root = tmp_path / "net"
    with running_devnet(root, "--nodes", "2", "--mode", "private") as devnet:
        wait_until(lambda: min(heights(root)) >= 1, "both nodes serving", devnet)
        written = layout(root)
        assert written is not None
        pids = [node["pid"] for node in written["nodes"]]
        devnet.kill()
        devnet.wait(timeout=DEADLINE)
        end = time.monotonic() + DEADLINE
        while [pid for pid in pids if alive(pid)]:
            assert time.monotonic() < end, "node processes outlived their devnet"
            time.sleep(POLL_S)

"""`meshchain devnet` as a user runs it: real node processes, demo traffic through the
API, a clean stop on SIGTERM with no process left behind, and a resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from meshchain.cli.devnet import DEVNET_FILE, WALLETS_DIR
from meshchain.config import read_key
from meshchain.core.crypto.address import address_from_public_key, encode_address

DEADLINE = 90.0  # generous: a shared 2-core machine can be slow
POLL_S = 0.2
RPC_TIMEOUT_S = 5.0
NODES = 3
FIRST_HEIGHT = 3  # blocks the first run must reach
MORE_BLOCKS = 2  # blocks the resumed run must add


def _wait(condition: Callable[[], bool], what: str, devnet: subprocess.Popen[str]) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        if devnet.poll() is not None:
            raise AssertionError(f"devnet exited ({devnet.returncode}) waiting for {what}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def _rpc(url: str, method: str, params: dict[str, Any] | None = None) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
    request = urllib.request.Request(
        url, body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S) as response:
        return json.loads(response.read())["result"]


def _layout(root: Path) -> dict[str, Any] | None:
    path = root / DEVNET_FILE
    if not path.exists():
        return None
    layout: dict[str, Any] = json.loads(path.read_text())
    return layout


def _heights(root: Path) -> list[int]:
    """Every node's height from its API; -1 for a node not answering yet."""
    layout = _layout(root)
    if layout is None:
        return [-1]
    heights = []
    for node in layout["nodes"]:
        try:
            status = _rpc(node["api"], "status")
            heights.append(int(status["sync_info"]["latest_block_height"]))
        except (OSError, urllib.error.URLError, KeyError, ValueError):
            heights.append(-1)
    return heights


def _confirmed_transfers(root: Path) -> int:
    """Demo transfers confirmed on chain: the wallets' confirmed nonces, summed."""
    layout = _layout(root)
    assert layout is not None
    url = layout["nodes"][0]["api"]
    total = 0
    for path in sorted((root / WALLETS_DIR).glob("*.key")):
        address = encode_address(address_from_public_key(read_key(path).public_key))
        with contextlib.suppress(OSError, urllib.error.URLError):
            total += int(_rpc(url, "account", {"address": address})["nonce"])
    return total


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def _devnet(root: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """`meshchain devnet` running on `root`; killed, with its nodes, if the test fails."""
    command = [sys.executable, "-m", "meshchain", "devnet", "--dir", str(root), *extra]
    devnet = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield devnet
    finally:
        if devnet.poll() is None:
            devnet.kill()
            devnet.wait(timeout=DEADLINE)
        layout = _layout(root)
        for node in layout["nodes"] if layout else []:
            if node.get("pid") and _alive(node["pid"]):
                os.kill(node["pid"], signal.SIGKILL)


def _stop(devnet: subprocess.Popen[str], root: Path) -> None:
    """SIGTERM; the command exits 0 and leaves none of its nodes running."""
    layout = _layout(root)
    assert layout is not None
    pids = [node["pid"] for node in layout["nodes"]]
    devnet.send_signal(signal.SIGTERM)
    output, _ = devnet.communicate(timeout=DEADLINE)
    assert devnet.returncode == 0, output[-3000:]
    assert "devnet stopped" in output
    assert f"dashboard: {layout['nodes'][0]['api']}/" in output  # node 0 serves it
    assert not [pid for pid in pids if _alive(pid)]


def test_devnet_runs_traffic_stops_on_sigterm_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "net"
    with _devnet(root, "--nodes", str(NODES), "--mode", "consortium") as devnet:
        _wait(lambda: _layout(root) is not None, "devnet.json", devnet)
        layout = _layout(root)
        assert layout is not None
        assert [n["name"] for n in layout["nodes"]] == [f"node{i}" for i in range(NODES)]
        for node in layout["nodes"]:
            assert Path(node["datadir"]).parent == root.resolve()
            assert node["p2p"].startswith("127.0.0.")
        _wait(lambda: min(_heights(root)) >= FIRST_HEIGHT, "blocks on every node", devnet)
        _wait(lambda: _confirmed_transfers(root) > 0, "a confirmed demo transfer", devnet)
        chain_id = _rpc(layout["nodes"][0]["api"], "status")["node_info"]["network"]
        _stop(devnet, root)
    assert max(_heights(root)) == -1  # nothing answers any more
    heights_before = _stored_heights(root)

    with _devnet(root) as devnet:
        _wait(
            lambda: min(_heights(root)) >= max(heights_before) + MORE_BLOCKS,
            "the resumed chain to grow",
            devnet,
        )
        resumed = _layout(root)
        assert resumed is not None
        assert _rpc(resumed["nodes"][0]["api"], "status")["node_info"]["network"] == chain_id
        _stop(devnet, root)


def _stored_heights(root: Path) -> list[int]:
    """Heights the nodes logged before stopping (the API is gone with them)."""
    heights = []
    for log in sorted(root.glob("node*/node-*.log")):
        lines = [line for line in log.read_text().splitlines() if "stopped at height" in line]
        assert lines, f"{log} has no clean stop"
        heights.append(int(lines[-1].rsplit(" ", 1)[1]))
    return heights


def test_a_sigkilled_devnet_leaves_no_node_running(tmp_path: Path) -> None:
    """Nothing can clean up after SIGKILL but the kernel: each node is told to stop
    (SIGTERM) when the process that started it dies."""
    root = tmp_path / "net"
    with _devnet(root, "--nodes", "2", "--mode", "private") as devnet:
        _wait(lambda: min(_heights(root)) >= 1, "both nodes serving", devnet)
        layout = _layout(root)
        assert layout is not None
        pids = [node["pid"] for node in layout["nodes"]]
        devnet.kill()
        devnet.wait(timeout=DEADLINE)
        end = time.monotonic() + DEADLINE
        while [pid for pid in pids if _alive(pid)]:
            assert time.monotonic() < end, "node processes outlived their devnet"
            time.sleep(POLL_S)

"""The real `meshchain` command line as processes, for the tests that run it as a user
does: one-shot commands, and a running `meshchain devnet` read through its devnet.json
and its nodes' APIs. Every wait polls a condition up to a generous deadline."""

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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from meshchain.cli.devnet import DEVNET_FILE

DEADLINE = 90.0  # generous: a shared 2-core machine can be slow
POLL_S = 0.2
RPC_TIMEOUT_S = 5.0


def meshchain(
    *args: str, timeout: float = DEADLINE, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `meshchain ARGS` to the end (with `env` added to this environment)."""
    return subprocess.run(
        [sys.executable, "-m", "meshchain", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def wait_until(condition: Callable[[], bool], what: str, devnet: subprocess.Popen[str]) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        if devnet.poll() is not None:
            output = devnet.stdout.read()[-3000:] if devnet.stdout is not None else ""
            raise AssertionError(
                f"devnet exited ({devnet.returncode}) waiting for {what}:\n{output}"
            )
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def rpc_call(url: str, method: str, params: dict[str, Any] | None = None) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
    request = urllib.request.Request(
        url, body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S) as response:
        return json.loads(response.read())["result"]


def layout(root: Path) -> dict[str, Any] | None:
    """devnet.json, once the devnet has written it."""
    path = root / DEVNET_FILE
    if not path.exists():
        return None
    written: dict[str, Any] = json.loads(path.read_text())
    return written


def heights(root: Path) -> list[int]:
    """Every node's height from its API; -1 for a node not answering yet."""
    written = layout(root)
    if written is None:
        return [-1]
    found = []
    for node in written["nodes"]:
        try:
            status = rpc_call(node["api"], "status")
            found.append(int(status["sync_info"]["latest_block_height"]))
        except (OSError, urllib.error.URLError, KeyError, ValueError):
            found.append(-1)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def running_devnet(root: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """`meshchain devnet` running on `root`; killed, with its nodes, if the test fails."""
    command = [sys.executable, "-m", "meshchain", "devnet", "--dir", str(root), *extra]
    devnet = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield devnet
    finally:
        if devnet.poll() is None:
            devnet.kill()
            devnet.wait(timeout=DEADLINE)
        written = layout(root)
        for node in written["nodes"] if written else []:
            if node.get("pid") and alive(node["pid"]):
                os.kill(node["pid"], signal.SIGKILL)


def stop_devnet(devnet: subprocess.Popen[str], root: Path) -> None:
    """SIGTERM; the command exits 0 within the deadline, and by then every node it
    started is gone (it waits for each before exiting)."""
    written = layout(root)
    assert written is not None
    pids = [node["pid"] for node in written["nodes"]]
    devnet.send_signal(signal.SIGTERM)
    output, _ = devnet.communicate(timeout=DEADLINE)
    assert devnet.returncode == 0, output[-3000:]
    assert "devnet stopped" in output
    assert f"dashboard: {written['nodes'][0]['api']}/" in output  # node 0 serves it
    assert not [pid for pid in pids if alive(pid)], output[-3000:]

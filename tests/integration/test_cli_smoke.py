"""The README's path end to end through the real CLI, every step its own process: a
four-node devnet on chosen ports, a wallet that imports one of its demo wallets, makes a
fresh key, sends to it and waits for the block, and sees the balance; then SIGTERM
stops the devnet and every node it started."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from clikit import (
    heights,
    layout,
    meshchain,
    running_devnet,
    stop_devnet,
    wait_until,
)

from meshchain.cli.devnet import WALLETS_DIR
from meshchain.devnet import FIRST_HOST, free_port

NODES = 4
PORTS_PER_NODE = 2  # P2P on P + 2i, API on P + 2i + 1
PORT_TRIES = 20
# The devnet's own demo traffic also spends from the wallet imported here, through the
# same node, so the wallet's nonce comes after any of those pending. Spreading the
# traffic thin over many wallets, and a fee above any demo fee (so ours wins a clash
# by replace-by-fee), keep the two senders of one account out of each other's way.
DEMO_WALLETS = "16"  # at most 21: each holds 1M coins, the supply cap is 21M
DEMO_TX_RATE = "0.1"
FEE = "0.001"  # 100,000 base units; demo fees are at most 20,000
AMOUNT = "3.25"
PASSPHRASE = "smoke test passphrase"


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_base_port() -> int:
    """A P whose ports P .. P + 2n - 1 are free on the hosts the devnet's nodes use."""
    for _ in range(PORT_TRIES):
        base = free_port(f"127.0.0.{FIRST_HOST}")
        ports = [(f"127.0.0.{FIRST_HOST + i // 2}", base + i) for i in range(2 * NODES)]
        if all(_bindable(host, port) for host, port in ports):
            return base
    raise AssertionError(f"no {2 * NODES} free consecutive ports in {PORT_TRIES} tries")


def _field(result: object, name: str) -> str:
    stdout = getattr(result, "stdout", "")
    match = re.search(rf"^{name}: (\S+)$", stdout, re.MULTILINE)
    assert match is not None, f"no {name} in {stdout!r} / {getattr(result, 'stderr', '')!r}"
    return match.group(1)


def test_devnet_wallet_send_balance_and_clean_stop(tmp_path: Path) -> None:
    root, keys = tmp_path / "net", tmp_path / "keys"
    base = free_base_port()
    extra = ["--nodes", str(NODES), "--base-port", str(base)]
    extra += ["--wallets", DEMO_WALLETS, "--tx-rate", DEMO_TX_RATE]
    env = {"MESHCHAIN_WALLET_DIR": str(keys), "MESHCHAIN_PASSPHRASE": PASSPHRASE}
    with running_devnet(root, *extra) as devnet:
        wait_until(lambda: min(heights(root)) >= 1, "blocks on every node", devnet)
        written = layout(root)
        assert written is not None
        apis = [node["api"] for node in written["nodes"]]
        assert apis == [f"http://127.0.0.{FIRST_HOST + i}:{base + 2 * i + 1}" for i in range(NODES)]
        node0 = apis[0]  # the devnet sends wallet-0's demo transfers through node 0 too

        imported = meshchain("wallet", "import", str(root / WALLETS_DIR / "wallet-0.key"), env=env)
        assert _field(imported, "name") == "wallet-0", imported.stderr
        fresh = _field(meshchain("wallet", "new", "--name", "fresh", env=env), "address")
        sent = meshchain(
            "wallet", "send", "wallet-0", fresh, AMOUNT, "--fee", FEE, "--wait", "--node", node0,
            env=env,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert re.fullmatch(r"[0-9a-f]{64}", _field(sent, "txid"))
        assert int(_field(sent, "height")) >= 1

        balance = meshchain("wallet", "balance", "fresh", "--node", node0, env=env)
        assert _field(balance, "address") == fresh
        assert _field(balance, "balance") == AMOUNT

        stop_devnet(devnet, root)  # SIGTERM: exit 0, and no node of it left running

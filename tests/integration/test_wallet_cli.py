"""`meshchain wallet` (through click's CliRunner, in this process) against a real
`meshchain node` process: a one-validator PoA chain with short blocks and an API token,
started once for the module. Every failure must be one line and exit 1."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result

from meshchain.api.client import rpc
from meshchain.cli.main import cli
from meshchain.cli.setup import COIN, make_genesis
from meshchain.config import open_datadir, save_config, write_key
from meshchain.core.chain.genesis import ChainMode
from meshchain.core.crypto.address import address_from_public_key, encode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.devnet import ProcessNet, create_devnet, free_port
from meshchain.errors import NodeApiError
from meshchain.wallet.amounts import parse_amount

HOST = "127.0.0.1"
TOKEN = "wallet-test-token"
PASSPHRASE = "test passphrase"
BLOCK_INTERVAL_MS = 300
FUNDS = 1_000 * COIN
FEE = 10_000  # base units: the wallet's default fee, 0.0001


@dataclass
class LiveNode:
    net: ProcessNet
    url: str
    funded_key_file: Path  # a plain hex key, as `keys new --out` writes
    funded: str  # its address


def _call(url: str, method: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    async def call() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            result: dict[str, Any] = await rpc(session, url, method, params)
            return result

    return asyncio.run(call())


def _answers(url: str) -> bool:
    try:
        _call(url, "status")
    except NodeApiError:
        return False
    return True


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    root = tmp_path_factory.mktemp("wallet-node")
    validator, identity, funded = SecretKey.generate(), SecretKey.generate(), SecretKey.generate()
    genesis = make_genesis(
        ChainMode.PRIVATE,
        chain_name="wallet-test",
        validators=[validator],
        members=[identity],
        allocations=[(address_from_public_key(funded.public_key), FUNDS)],
        block_interval_ms=BLOCK_INTERVAL_MS,
    )
    net = create_devnet(root, genesis, [identity], [validator])
    home = net.nodes[0].home
    config = open_datadir(home).config
    config.api.token = TOKEN
    save_config(home, config)
    write_key(root / "funded.key", funded)
    url = f"http://{net.nodes[0].host}:{net.nodes[0].api_port}/"
    net.start()
    try:
        net.wait(lambda: _answers(url), "the node's API")
        address = encode_address(address_from_public_key(funded.public_key))
        yield LiveNode(net, url, root / "funded.key", address)
    finally:
        net.stop()


@pytest.fixture(scope="module")
def wallet_dir(node: LiveNode, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keystore holding the funded key (as "funded") and an empty "bob"."""
    path = tmp_path_factory.mktemp("keystore")
    for args in (["import", str(node.funded_key_file)], ["new", "--name", "bob"]):
        result = wallet(path, node, *args)
        assert result.exit_code == 0, result.output
    return path


def wallet(
    wallet_dir: Path,
    node: LiveNode,
    *args: str,
    passphrase: str = PASSPHRASE,
    token: str | None = TOKEN,
    node_url: str | None = None,
) -> Result:
    """`meshchain wallet ARGS` with its keystore, node, token and passphrase from the
    environment (the options are tested too: --node here, --passphrase-file in unit)."""
    env = {
        "MESHCHAIN_WALLET_DIR": str(wallet_dir),
        "MESHCHAIN_PASSPHRASE": passphrase,
        "MESHCHAIN_API_TOKEN": token,
    }
    command = list(args)
    if args[0] in ("balance", "send"):
        command += ["--node", node_url or node.url]
    return CliRunner(env=env).invoke(cli, ["wallet", *command])


def _field(result: Result, name: str) -> str:
    assert result.exit_code == 0, result.output
    match = re.search(rf"^{name}: (\S+)$", result.stdout, re.MULTILINE)
    assert match is not None, result.stdout
    return match.group(1)


def test_send_with_wait_lands_in_a_block_and_the_balance_shows_it(
    node: LiveNode, wallet_dir: Path, tmp_path: Path
) -> None:
    listed = wallet(wallet_dir, node, "list")
    assert listed.exit_code == 0, listed.output
    assert re.search(rf"^funded\s+{node.funded}$", listed.stdout, re.MULTILINE)
    carol = _field(wallet(tmp_path, node, "new", "--name", "carol"), "address")
    before = int(_call(node.url, "account", {"address": node.funded})["balance"])

    sent = wallet(wallet_dir, node, "send", "funded", carol, "2.5", "--wait")
    txid, height = _field(sent, "txid"), int(_field(sent, "height"))
    committed = _call(node.url, "tx", {"hash": txid})
    assert (committed["status"], committed["height"]) == ("committed", height)

    assert _field(wallet(tmp_path, node, "balance", "carol"), "balance") == "2.5"
    after = wallet(wallet_dir, node, "balance", node.funded.upper())  # bech32: any case
    assert parse_amount(_field(after, "balance")) == before - 250_000_000 - FEE


def test_sends_without_wait_take_the_next_nonce_after_pending_ones(
    node: LiveNode, wallet_dir: Path
) -> None:
    bob = _field(wallet(wallet_dir, node, "balance", "bob"), "address")
    txids = []
    for _ in range(2):  # the second is sent while the first may still be pending
        sent = wallet(wallet_dir, node, "send", "funded", "bob", "0.5")
        assert _field(sent, "status") in ("accepted", "stemmed")
        txids.append(_field(sent, "txid"))
    assert len(set(txids)) == 2
    node.net.wait(
        lambda: all(_call(node.url, "tx", {"hash": t})["status"] == "committed" for t in txids),
        "both transfers in blocks",
    )
    assert _field(wallet(wallet_dir, node, "balance", bob), "balance").startswith("1")


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (["send", "funded", "bob", "1"], {"passphrase": "not it"}, "wrong passphrase for mc1"),
        (["send", "bob", "funded", "5000"], {}, r"insufficient funds: mc1\S+ holds [0-9.]+ coins"),
        (["send", "funded", "bob", "1"], {"token": None}, "wants its API token.*--token"),
        (["send", "nobody", "bob", "1"], {}, "no key 'nobody'"),
        (["send", "funded", "mc1qqqqqqqq", "1"], {}, "bad checksum"),
        (["send", "funded", "bob", "0.000000001"], {}, "finer than the base unit"),
        (["send", "funded", "bob", "1", "--fee", "x"], {}, "fee 'x' is not a decimal"),
        (["balance", "nobody"], {}, "no key 'nobody'"),
        (["balance", "bob"], {"node_url": f"http://{HOST}:0/"}, "cannot reach the node"),
    ],
)
def test_failures_are_one_line_errors(
    node: LiveNode, wallet_dir: Path, args: list[str], options: dict[str, Any], message: str
) -> None:
    line = _one_line_error(wallet(wallet_dir, node, *args, **options))
    assert re.search(message, line), line


def test_an_unreachable_node_is_named_with_the_reason(node: LiveNode, wallet_dir: Path) -> None:
    url = f"http://{HOST}:{free_port(HOST)}/"  # nothing listens there
    line = _one_line_error(wallet(wallet_dir, node, "balance", "bob", node_url=url))
    assert line == f"Error: cannot reach the node at {url}: Connection refused"

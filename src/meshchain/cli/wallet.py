"""`meshchain wallet`: keys under a passphrase, balances, and transfers through a node.

Keys live in a keystore directory (`meshchain.wallet.keystore`); everything about the
chain is asked of a node's JSON-RPC API, so the wallet works against any node it can
reach, devnet or not. Each failure is one line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from meshchain.api.client import signed_transfer
from meshchain.config import read_key
from meshchain.core.crypto.address import ADDRESS_HRP, decode_address, encode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.errors import MeshchainError, WalletError
from meshchain.wallet.amounts import format_amount, parse_amount
from meshchain.wallet.keystore import MAX_PASSPHRASE_BYTES, Keystore, check_name
from meshchain.wallet.transfer import DEFAULT_NODE_URL, balance, node_url, prepare, submit

DEFAULT_WALLET_DIR = "~/.meshchain/wallet"
WALLET_DIR_ENV = "MESHCHAIN_WALLET_DIR"
PASSPHRASE_ENV = "MESHCHAIN_PASSPHRASE"
TOKEN_ENV = "MESHCHAIN_API_TOKEN"
DEFAULT_FEE = "0.0001"  # coins: 10,000 base units, far above the 1-unit-a-byte relay floor

Command = TypeVar("Command", bound=Callable[..., Any])


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A meshchain error or an OS error as click's one-line `Error: …` and exit 1."""
    try:
        yield
    except MeshchainError as error:
        raise click.ClickException(" ".join(str(error).split())) from None
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        raise click.ClickException(f"{where}{error.strerror or error}") from None


def _keystore_option(command: Command) -> Command:
    return click.option(
        "--wallet-dir",
        default=DEFAULT_WALLET_DIR,
        show_default=True,
        envvar=WALLET_DIR_ENV,
        help=f"The keystore directory (env {WALLET_DIR_ENV}).",
    )(command)


def _passphrase_option(command: Command) -> Command:
    return click.option(
        "--passphrase-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help=f"Read the passphrase from this file (else env {PASSPHRASE_ENV}, else a prompt).",
    )(command)


def _node_option(command: Command) -> Command:
    return click.option(
        "--node", default=DEFAULT_NODE_URL, show_default=True, help="The node's API URL."
    )(command)


def _keystore(wallet_dir: str) -> Keystore:
    return Keystore(Path(os.path.expanduser(wallet_dir)))


def _passphrase(path: Path | None, *, confirm: bool) -> str:
    """From the file (its first line), else the environment, else a hidden prompt."""
    if path is not None:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PASSPHRASE_BYTES + 2)
        try:
            passphrase = raw.decode().split("\n", 1)[0].removesuffix("\r")
        except UnicodeDecodeError:
            raise WalletError(f"{path}: the passphrase is not UTF-8 text") from None
        if not passphrase:
            raise WalletError(f"{path}: no passphrase in the file")
        return passphrase
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return from_env
    answer: str = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
    return answer


def _address(text: str, store: Keystore) -> bytes:
    """An `mc1…` address, or the address of a key in the keystore by name."""
    if text.lower().startswith(ADDRESS_HRP + "1"):
        return decode_address(text)
    return decode_address(store.find(text).address)


def _store_key(
    store: Keystore, key: SecretKey, name: str | None, passphrase_file: Path | None
) -> None:
    name = store.check_new(key, name)  # before the passphrase: no typing for nothing
    stored = store.add(key, _passphrase(passphrase_file, confirm=True), name)
    click.echo(f"name: {stored.name}\naddress: {stored.address}\nfile: {stored.path}")


@click.group()
def wallet() -> None:
    """Keys under a passphrase; balances and transfers through a node's API."""


@wallet.command("new")
@click.option("--name", default=None, help="What to call the key (default key-N).")
@_keystore_option
@_passphrase_option
def wallet_new(name: str | None, wallet_dir: str, passphrase_file: Path | None) -> None:
    """Make a key, encrypt it under a passphrase, and print its address."""
    with _one_line_errors():
        _store_key(_keystore(wallet_dir), SecretKey.generate(), name, passphrase_file)


@wallet.command("import")
@click.argument("key_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--name", default=None, help="What to call the key (default: the file's stem).")
@_keystore_option
@_passphrase_option
def wallet_import(
    key_file: Path, name: str | None, wallet_dir: str, passphrase_file: Path | None
) -> None:
    """Take a plain key file (hex, as `keys new --out` and the devnet's wallets/ write)."""
    with _one_line_errors():
        key = read_key(key_file)
        if name is None:
            with contextlib.suppress(WalletError):
                name = check_name(key_file.stem)
        _store_key(_keystore(wallet_dir), key, name, passphrase_file)


@wallet.command("list")
@_keystore_option
def wallet_list(wallet_dir: str) -> None:
    """Every key's name and address (no passphrase needed)."""
    with _one_line_errors():
        store = _keystore(wallet_dir)
        entries = store.entries()
        if not entries:
            click.echo(f"no keys in {store.root}", err=True)
        width = max((len(entry.name) for entry in entries), default=0)
        for entry in entries:
            click.echo(f"{entry.name:<{width}}  {entry.address}")


@wallet.command("balance")
@click.argument("who", metavar="ADDRESS|NAME")
@_keystore_option
@_node_option
def wallet_balance(who: str, wallet_dir: str, node: str) -> None:
    """An address's balance in coins, and its nonces, as the node sees them."""
    with _one_line_errors():
        address = _address(who, _keystore(wallet_dir))
        url = node_url(node)
        state = asyncio.run(balance(url, address))
        click.echo(
            f"address: {encode_address(address)}\nbalance: {format_amount(state.balance)}\n"
            f"nonce: {state.nonce}\npending: {state.pending}"
        )


@wallet.command("send")
@click.argument("sender", metavar="FROM")
@click.argument("recipient", metavar="TO")
@click.argument("amount")
@click.option("--fee", default=DEFAULT_FEE, show_default=True, help="Fee in coins.")
@click.option("--wait", is_flag=True, help="Wait until the transfer is in a block.")
@_keystore_option
@_passphrase_option
@_node_option
@click.option(
    "--token",
    default="",
    envvar=TOKEN_ENV,
    help=f"The node's API token, if it wants one for broadcasts (env {TOKEN_ENV}).",
)
def wallet_send(
    sender: str,
    recipient: str,
    amount: str,
    fee: str,
    wait: bool,
    wallet_dir: str,
    passphrase_file: Path | None,
    node: str,
    token: str,
) -> None:
    """Send AMOUNT coins from the key FROM (name or address) to TO (address or name)."""
    with _one_line_errors():
        store = _keystore(wallet_dir)
        entry = store.find(sender)
        to = _address(recipient, store)
        units, fee_units = parse_amount(amount), parse_amount(fee, what="fee", allow_zero=True)
        url = node_url(node)
        from_address = decode_address(entry.address)
        plan = asyncio.run(prepare(url, from_address, units, fee_units))
        key = store.unlock(entry, _passphrase(passphrase_file, confirm=False))
        raw = signed_transfer(key, plan.chain, to, units, fee_units, plan.sender.next_nonce)
        sent = asyncio.run(submit(url, raw, wait=wait, token=token))
        click.echo(f"txid: {sent.txid}\nstatus: {sent.status}")
        if sent.height is not None:
            click.echo(f"height: {sent.height}\nblock: {sent.block_hash}")

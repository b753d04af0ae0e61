"""`meshchain` — the command line: init, keys, node, demo, devnet, sim, wallet."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from meshchain import __version__
from meshchain.api.server import ApiServer
from meshchain.cli.demo import demo
from meshchain.cli.devnet import devnet
from meshchain.cli.logs import LOG_FORMATS, LOG_LEVELS, configure_logging
from meshchain.cli.progress import SyncBar, terminal_logging
from meshchain.cli.setup import COIN, create_datadir, make_genesis
from meshchain.cli.sim import sim
from meshchain.cli.wallet import wallet
from meshchain.config import open_datadir, parse_host_port, save_config, write_key
from meshchain.core.chain.genesis import ChainMode
from meshchain.core.crypto.address import address_from_public_key, encode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import NodeStarted
from meshchain.core.node import Node, NodeConfig
from meshchain.core.transport.identity import new_noise_static_key
from meshchain.core.transport.session import AdmissionPolicy
from meshchain.errors import MeshchainError
from meshchain.runtime.driver import NodeDriver, install_uvloop, stop_on_signals
from meshchain.runtime.network import P2PConfig, P2PService
from meshchain.storage.sqlite import SqliteChainStore

INIT_WALLET_KEY_FILE = "keys/wallet.key"
INIT_ALLOCATION = 1_000_000 * COIN


def _fail(error: Exception) -> NoReturn:
    raise click.ClickException(str(error))


def _log_failure(error: Exception) -> NoReturn:
    """`_fail` for JSON logs: the error as a record, so stderr stays one JSON a line."""
    logging.getLogger("meshchain.node").error("%s", error)
    raise SystemExit(1)


@click.group()
@click.version_option(__version__, prog_name="meshchain")
def cli() -> None:
    """meshchain: a blockchain peer-to-peer network."""


@cli.command()
@click.option("--datadir", required=True, type=click.Path(path_type=Path), help="Node home.")
@click.option(
    "--mode",
    type=click.Choice([m.value for m in ChainMode]),
    default="private",
    show_default=True,
    help="public (proof of work), consortium (BFT) or private (PoA).",
)
@click.option("--chain-name", default=None, help="Human name of the chain.")
@click.option("--listen", default=None, help="HOST:PORT to listen on (config [p2p] listen).")
@click.option("--peer", "peers", multiple=True, help="HOST:PORT to stay connected to.")
@click.option("--api", default=None, help='HOST:PORT of the JSON-RPC API ([api] listen; "" none).')
@click.option("--force", is_flag=True, help="Overwrite an existing data directory.")
def init(
    datadir: Path,
    mode: str,
    chain_name: str | None,
    listen: str | None,
    peers: tuple[str, ...],
    api: str | None,
    force: bool,
) -> None:
    """Create a single-node chain: genesis.toml, config.toml and keys.

    This node is the chain's only member and validator, and keys/wallet.key holds the
    funded genesis account.
    """
    chain_mode = ChainMode(mode)
    node_key, validator_key, wallet_key = (
        SecretKey.generate(),
        SecretKey.generate(),
        (SecretKey.generate()),
    )
    wallet = address_from_public_key(wallet_key.public_key)
    try:
        genesis = make_genesis(
            chain_mode,
            chain_name=chain_name or f"meshchain-{mode}",
            validators=[validator_key],
            members=[node_key],
            allocations=[(wallet, INIT_ALLOCATION)],
        )
        if listen is not None:
            parse_host_port(listen, "--listen")
        for peer in peers:
            parse_host_port(peer, "--peer")
        if api:
            parse_host_port(api, "--api")
        create_datadir(datadir, genesis, node_key, validator_key, force=force)
        write_key(datadir / INIT_WALLET_KEY_FILE, wallet_key)
        if listen is not None or peers or api is not None:
            home = open_datadir(datadir)
            if listen is not None:
                home.config.p2p.listen = listen
            if api is not None:
                home.config.api.listen = api
            home.config.p2p.peers = list(peers)
            save_config(datadir, home.config)
    except MeshchainError as error:
        _fail(error)
    click.echo(f"initialized {mode} chain {genesis.chain_name!r} in {datadir}")
    click.echo(f"  node key:      {node_key.public_key.hex()}")
    click.echo(f"  wallet:        {encode_address(wallet)} ({INIT_ALLOCATION // COIN} coins)")


@cli.group()
def keys() -> None:
    """Key management."""


@keys.command("new")
@click.option("--out", type=click.Path(path_type=Path), help="Write the secret key here (0600).")
def keys_new(out: Path | None) -> None:
    """Make a secp256k1 key and print its address (and the secret, without --out)."""
    key = SecretKey.generate()
    report = {
        "address": encode_address(address_from_public_key(key.public_key)),
        "public_key": key.public_key.hex(),
    }
    if out is not None:
        if out.exists():
            _fail(FileExistsError(f"{out} exists; refusing to overwrite a key"))
        write_key(out, key)
        report["key_file"] = str(out)
    else:
        report["secret_key"] = key.to_bytes().hex()
    click.echo(json.dumps(report, indent=2))


@cli.command()
@click.option("--datadir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--log-level", default="info", show_default=True, type=click.Choice(LOG_LEVELS))
@click.option(
    "--log-format",
    default="human",
    show_default=True,
    type=click.Choice(LOG_FORMATS),
    help="human lines, or json: one object a line on stderr (no progress bar).",
)
def node(datadir: Path, log_level: str, log_format: str) -> None:
    """Run a node from its data directory until SIGINT or SIGTERM.

    It listens on `[p2p] listen` of config.toml, keeps connected to `[p2p] peers` and
    finds more peers from `[p2p] bootstrap` and peer exchange; it serves the JSON-RPC
    API and /metrics on `[api] listen`. On a terminal a progress bar shows a sync;
    elsewhere the log says how it goes.
    """
    console = Console(stderr=True)
    fancy = console.is_terminal and log_format == "human"  # rich lines and a sync bar
    if fancy:
        terminal_logging(log_level, console)
    else:
        configure_logging(log_level, log_format)
    fail = _fail if log_format == "human" else _log_failure
    try:
        home = open_datadir(datadir)
        genesis = home.genesis()
        members = (
            None
            if genesis.chain_mode is ChainMode.PUBLIC
            else frozenset(member.node_key for member in genesis.members)
        )
        identity = home.node_key()
        peers = home.peer_config(identity.public_key, members)
        config = NodeConfig(
            genesis, home.validator_key(), home.beneficiary(), peers, home.relay_config()
        )
        listen = home.listen_address()
        api = home.api_address()
        network = home.api_network()
        bandwidth = home.bandwidth()
        store = SqliteChainStore(
            home.database,
            synchronous=home.config.storage.synchronous,
            tx_index=home.config.storage.tx_index,
        )
        core = Node(config, store, random.Random())
    except MeshchainError as error:
        fail(error)
    p2p = P2PConfig(
        identity=identity,
        noise_static=new_noise_static_key(),
        policy=AdmissionPolicy(core.chain.chain_id, members),
        listen_address=home.config.p2p.listen,
        bandwidth=bandwidth,
    )
    install_uvloop()
    driver = NodeDriver(core)
    bar = SyncBar(console)
    if fancy:
        driver.observers.append(bar)
        driver.log_sync_progress = False
    try:
        asyncio.run(_run_node(driver, p2p, listen, api, home.config.api.token, network))
    except OSError as error:
        fail(error)
    except Exception:
        if log_format == "human":
            raise  # the traceback, as Python prints it
        logging.getLogger("meshchain.node").exception("the node failed")
        raise SystemExit(1) from None
    finally:
        bar.close()
        store.close()


async def _run_node(
    driver: NodeDriver,
    p2p: P2PConfig,
    listen: tuple[str, int],
    api: tuple[str, int] | None,
    token: str,
    network: list[str],
) -> None:
    stop = stop_on_signals()
    log = logging.getLogger("meshchain.node")
    chain = driver.node.chain
    service = P2PService(driver, p2p)
    await service.listen(*listen)
    server = None
    if api is not None:
        server = ApiServer(driver, token=token, p2p=service, network=network)
        try:
            host, port = await server.start(*api)
        except OSError:
            await service.close()
            raise
        log.info("api on http://%s:%d (JSON-RPC, /websocket, /metrics, dashboard /)", host, port)
    log.info(
        "node %s on chain %s at height %d",
        p2p.identity.public_key.hex()[:16],
        chain.chain_id.hex()[:16],
        chain.height,
    )
    driver.feed(NodeStarted())
    await stop.wait()
    if server is not None:
        await server.close()
    driver.stop()
    await service.close()
    log.info("stopped at height %d", chain.height)


cli.add_command(demo)
cli.add_command(devnet)
cli.add_command(sim)
cli.add_command(wallet)


def main() -> None:
    cli()

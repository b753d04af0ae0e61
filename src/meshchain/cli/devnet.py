"""`meshchain devnet`: a local network of real `meshchain node` processes with traffic.

The README's first command. It creates (or resumes) a network under one directory —
genesis with funded demo wallets, one data directory per node on 127.0.0.x — starts the
nodes, feeds them signed transfers through their JSON-RPC API, and shows what each node
reports. Everything goes through the same processes and API a user would run, so the
demo proves the real thing. Ctrl-C or SIGTERM stops every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from meshchain.api.client import account, chain_id, rpc, signed_transfer
from meshchain.cli.setup import COIN, make_genesis
from meshchain.config import read_key, write_key
from meshchain.core.chain.genesis import ChainMode
from meshchain.core.chain.ledger import MAX_MONEY
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey
from meshchain.devnet import NodeProcess, ProcessNet, create_devnet
from meshchain.errors import MeshchainError, NodeApiError
from meshchain.runtime.driver import stop_on_signals

DEVNET_FILE = "devnet.json"
WALLETS_DIR = "wallets"
WALLET_FUNDS = 1_000_000 * COIN
MAX_TRANSFER = 50 * COIN
FEE_RANGE = (1_000, 20_000)  # base units; varied so fee-rate ordering shows
REFRESH_S = 1.0  # the table (or a log line) about once a second
TXS_WINDOW_S = 10.0  # tx/s is measured over this much recent history
MAX_BLOCKS_PER_POLL = 5  # after a resume, do not fetch the whole history for tx/s


def _api_url(node: NodeProcess) -> str:
    return f"http://{node.host}:{node.api_port}/"


def _split(host_port: str) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    return host, int(port)


def _wallet_path(root: Path, index: int) -> Path:
    return root / WALLETS_DIR / f"wallet-{index}.key"


def wallet_funds(wallets: int) -> int:
    """Each demo wallet's grant: WALLET_FUNDS, or an equal share of half the supply cap
    when that many wallets would exceed it (block rewards need the rest)."""
    return min(WALLET_FUNDS, MAX_MONEY // 2 // wallets)


def _load_wallets(root: Path) -> list[SecretKey]:
    wallets: list[SecretKey] = []
    while _wallet_path(root, len(wallets)).exists():
        wallets.append(read_key(_wallet_path(root, len(wallets))))
    return wallets


def create_network(
    root: Path, nodes: int, mode: ChainMode, wallets: int, base_port: int | None
) -> tuple[ProcessNet, list[SecretKey]]:
    """A new devnet under `root`: every node a member, and a validator (consortium,
    private) or miner (public); wallet keys saved so a resume can keep spending."""
    wallet_keys = [SecretKey.generate() for _ in range(wallets)]
    node_keys = [SecretKey.generate() for _ in range(nodes)]
    validator_keys = [SecretKey.generate() for _ in range(nodes)]
    genesis = make_genesis(
        mode,
        chain_name=f"meshchain-devnet-{mode.value}",
        validators=validator_keys,
        members=node_keys,
        allocations=[
            (address_from_public_key(k.public_key), wallet_funds(wallets)) for k in wallet_keys
        ],
    )
    # On PoW a node with a "validator" key mines, paying that key's address.
    net = create_devnet(root, genesis, node_keys, validator_keys, base_port=base_port)
    for index, key in enumerate(wallet_keys):
        write_key(_wallet_path(root, index), key)
    return net, wallet_keys


def load_network(root: Path) -> tuple[list[NodeProcess], str]:
    """The nodes of the devnet described by `root/devnet.json`, not started."""
    layout = json.loads((root / DEVNET_FILE).read_text())
    nodes = []
    for entry in layout["nodes"]:
        host, port = _split(entry["p2p"])
        _, api_port = _split(entry["api"].removeprefix("http://").rstrip("/"))
        nodes.append(NodeProcess(Path(entry["datadir"]), host, port, api_port=api_port))
    return nodes, str(layout.get("mode", "?"))


def write_layout(root: Path, nodes: list[NodeProcess], mode: str) -> None:
    """devnet.json: where each node listens and lives (and its pid, for scripts)."""
    entries = [
        {
            "name": node.home.name,
            "p2p": f"{node.host}:{node.port}",
            "api": f"http://{node.host}:{node.api_port}",
            "datadir": str(node.home.resolve()),
            "pid": node.process.pid if node.process is not None else None,
        }
        for node in nodes
    ]
    text = json.dumps({"mode": mode, "nodes": entries}, indent=2) + "\n"
    temporary = root / (DEVNET_FILE + ".tmp")
    temporary.write_text(text)
    temporary.replace(root / DEVNET_FILE)  # readers never see half a file


@dataclass
class NodeView:
    """What one node last reported, for the table."""

    name: str
    up: bool = False
    height: int = 0
    finalized: int | None = None
    peers: int = 0
    mempool: int = 0
    seen_height: int | None = None  # the last block whose tx count we have
    recent: deque[tuple[float, int]] = field(default_factory=deque)  # (when, tx count)

    def tx_rate(self, now: float) -> float:
        while self.recent and self.recent[0][0] < now - TXS_WINDOW_S:
            self.recent.popleft()
        return sum(count for _, count in self.recent) / TXS_WINDOW_S


@dataclass
class Traffic:
    """Demo transfers: counts, and each wallet's next nonce tracked locally."""

    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    nonces: dict[int, int] = field(default_factory=dict)


async def poll(session: aiohttp.ClientSession, node: NodeProcess, view: NodeView) -> None:
    """Refresh `view` from the node's `status`, and its tx/s from new blocks."""
    url = _api_url(node)
    try:
        status = await rpc(session, url, "status")
    except NodeApiError:
        view.up = False
        return
    view.up = True
    sync = status["sync_info"]
    view.height = int(sync["latest_block_height"])
    view.finalized = sync["finalized_height"]
    view.peers = int(status["peers"])
    view.mempool = int(status["mempool_size"])
    if view.seen_height is None:
        view.seen_height = view.height  # tx/s counts from now on
    start = max(view.seen_height + 1, view.height - MAX_BLOCKS_PER_POLL + 1)
    for height in range(start, view.height + 1):
        with contextlib.suppress(NodeApiError):
            block = await rpc(session, url, "block", {"height": height})
            view.recent.append((time.monotonic(), int(block["tx_count"])))
    view.seen_height = view.height


async def send_traffic(
    session: aiohttp.ClientSession,
    nodes: list[NodeProcess],
    wallets: list[SecretKey],
    chain: bytes,
    rate: float,
    traffic: Traffic,
) -> None:
    """Signed transfers between the wallets, `rate` a second, through the nodes' APIs;
    wallet i always goes through node i mod n so its nonces arrive there in order."""
    rng = random.Random()
    while True:
        await asyncio.sleep(1 / rate)
        sender_index, recipient_index = rng.sample(range(len(wallets)), 2)
        sender = wallets[sender_index]
        url = _api_url(nodes[sender_index % len(nodes)])
        address = address_from_public_key(sender.public_key)
        try:
            if sender_index not in traffic.nonces:
                traffic.nonces[sender_index] = (await account(session, url, address)).next_nonce
            raw = signed_transfer(
                sender,
                chain,
                address_from_public_key(wallets[recipient_index].public_key),
                amount=rng.randrange(1, MAX_TRANSFER),
                fee=rng.randrange(*FEE_RANGE),
                nonce=traffic.nonces[sender_index],
            )
            traffic.submitted += 1
            answer = await rpc(session, url, "broadcast_tx_sync", {"tx": raw})
        except NodeApiError:
            traffic.nonces.pop(sender_index, None)  # ask the node again next time
            continue
        if answer["status"] == "rejected":
            traffic.rejected += 1
            traffic.nonces.pop(sender_index, None)
        else:
            traffic.accepted += 1
            traffic.nonces[sender_index] += 1


def render_table(mode: str, views: list[NodeView], traffic: Traffic, now: float) -> Table:
    table = Table(
        title=f"meshchain devnet ({mode}) — transfers submitted {traffic.submitted}, "
        f"accepted {traffic.accepted}, rejected {traffic.rejected}"
    )
    for column in ("node", "height", "finalized", "peers", "mempool", "tx/s"):
        table.add_column(column, justify="left" if column == "node" else "right")
    for view in views:
        if not view.up:
            table.add_row(view.name, "down", "", "", "", "")
            continue
        table.add_row(
            view.name,
            str(view.height),
            "—" if view.finalized is None else str(view.finalized),
            str(view.peers),
            str(view.mempool),
            f"{view.tx_rate(now):.1f}",
        )
    return table


def render_line(views: list[NodeView], traffic: Traffic, now: float) -> str:
    """The table as one log line, for output that is not a terminal."""
    parts = [f"devnet submitted={traffic.submitted} accepted={traffic.accepted}"]
    for view in views:
        if view.up:
            parts.append(
                f"{view.name} height={view.height} finalized={view.finalized} "
                f"peers={view.peers} mempool={view.mempool} tx/s={view.tx_rate(now):.1f}"
            )
        else:
            parts.append(f"{view.name} down")
    return " | ".join(parts)


def _crashed(nodes: list[NodeProcess]) -> NodeProcess | None:
    """A node that exited on its own with an error (exit 0 is Ctrl-C reaching it too)."""
    for node in nodes:
        if node.process is not None and node.process.poll() not in (None, 0):
            return node
    return None


async def run_devnet(
    nodes: list[NodeProcess], mode: str, wallets: list[SecretKey], rate: float, duration: float
) -> str | None:
    """Watch and feed the started nodes until a signal or `duration`; an error, or None."""
    stop = stop_on_signals()
    live = sys.stdout.isatty()
    console = Console()
    views = [NodeView(node.home.name) for node in nodes]
    traffic = Traffic()
    deadline = None if duration <= 0 else time.monotonic() + duration
    sender: asyncio.Task[None] | None = None
    async with aiohttp.ClientSession() as session:
        with (
            Live(console=console, auto_refresh=False) if live else contextlib.nullcontext() as view
        ):
            try:
                while not stop.is_set():
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    crashed = _crashed(nodes)
                    if crashed is not None:
                        return f"{crashed.home.name} exited:\n{crashed.log_text()[-2000:]}"
                    if all(node.process is not None and node.process.poll() == 0 for node in nodes):
                        break  # a Ctrl-C on the terminal reached the nodes first
                    await asyncio.gather(*(poll(session, n, v) for n, v in zip(nodes, views)))
                    if sender is None and all(v.up for v in views):
                        chain = await chain_id(session, _api_url(nodes[0]))
                        sender = asyncio.create_task(
                            send_traffic(session, nodes, wallets, chain, rate, traffic)
                        )
                    now = time.monotonic()
                    if view is not None:
                        view.update(render_table(mode, views, traffic, now), refresh=True)
                    else:
                        print(render_line(views, traffic, now), flush=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=REFRESH_S)
            finally:
                if sender is not None:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
    return None


@click.command()
@click.option("--nodes", "count", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--mode",
    type=click.Choice([m.value for m in ChainMode]),
    default=ChainMode.CONSORTIUM.value,
    show_default=True,
    help="public (every node mines), consortium (BFT) or private (PoA); new devnets only.",
)
@click.option(
    "--dir",
    "root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("devnet-data"),
    show_default=True,
    help="Where the devnet lives; one holding devnet.json resumes.",
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65_000),
    default=None,
    help="Node i listens on P+2i and serves its API on P+2i+1 (default: free ports).",
)
@click.option("--wallets", type=click.IntRange(2, 1000), default=8, show_default=True)
@click.option(
    "--tx-rate",
    type=click.FloatRange(0.1, 1_000),
    default=5.0,
    show_default=True,
    help="Demo transfers sent per second.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Stop after this many seconds (0: run until Ctrl-C or SIGTERM).",
)
def devnet(
    count: int,
    mode: str,
    root: Path,
    base_port: int | None,
    wallets: int,
    tx_rate: float,
    duration: float,
) -> None:
    """Run a local multi-node network with demo traffic and a live table."""
    try:
        if (root / DEVNET_FILE).exists():
            nodes, mode = load_network(root)
            keys = _load_wallets(root)
            click.echo(f"resuming the {mode} devnet in {root} ({len(nodes)} nodes)", err=True)
        else:
            root.mkdir(parents=True, exist_ok=True)
            net, keys = create_network(root, count, ChainMode(mode), wallets, base_port)
            nodes = net.nodes
            click.echo(f"created a {mode} devnet of {count} nodes in {root}", err=True)
    except (MeshchainError, OSError, ValueError, KeyError) as error:
        raise click.ClickException(str(error)) from None
    if len(keys) < 2:
        raise click.ClickException(f"{root} holds fewer than two demo wallets")
    failure = None
    signal.signal(signal.SIGTERM, _interrupt)  # until asyncio takes over: stop cleanly
    try:
        for node in nodes:
            node.start()
        write_layout(root, nodes, mode)
        for node in nodes:
            click.echo(f"  {node.home.name}: API {_api_url(node)}", err=True)
        click.echo(f"dashboard: {_api_url(nodes[0])} (open it in a browser)", err=True)
        failure = asyncio.run(run_devnet(nodes, mode, keys, tx_rate, duration))
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM while starting: a normal stop
    finally:
        signal.signal(signal.SIGTERM, _interrupt)
        stop_all(nodes)
    if failure is not None:
        raise click.ClickException(failure)
    click.echo(f"devnet stopped; data in {root} (run again to resume)", err=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_all(nodes: list[NodeProcess]) -> None:
    """SIGTERM every node at once, then wait for each (NodeProcess.stop kills a node
    that does not stop in time), so stopping takes one node's time, not n."""
    for node in nodes:
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.stop()
        except KeyboardInterrupt:
            node.kill()  # a second Ctrl-C: no more patience, but no orphan either

"""`meshchain demo`: a private proof-of-authority chain making blocks from live traffic.

One node in one process, no sockets (`meshchain devnet` is the multi-process network):
a real node core on the real SQLite store, driven by the asyncio runtime, fed signed
transfers between demo wallets, with a live table. Run it again with the same --datadir
and it resumes the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from meshchain.cli.setup import COIN, create_datadir, make_genesis
from meshchain.config import CONFIG_FILE, KEYS_DIR, open_datadir, read_key, write_key
from meshchain.core.chain.genesis import ChainMode
from meshchain.core.chain.tx import TxBody, sign_transaction
from meshchain.core.crypto.address import address_from_public_key, encode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import Action, BlockAccepted, NodeStarted, TransactionSubmitted
from meshchain.core.node import Node, NodeConfig
from meshchain.core.wire.codec import encode
from meshchain.errors import MeshchainError
from meshchain.runtime.driver import NodeDriver, install_uvloop, stop_on_signals
from meshchain.storage.sqlite import SqliteChainStore

DEMO_WALLET_FUNDS = 10_000 * COIN
DEMO_MAX_TRANSFER = 50 * COIN
DEMO_FEE_RANGE = (1_000, 20_000)  # base units; fee rates vary so ordering shows


def _wallet_path(datadir: Path, index: int) -> Path:
    return datadir / KEYS_DIR / f"demo-wallet-{index}.key"


def prepare_demo(datadir: Path, wallets: int, block_interval_ms: int) -> list[SecretKey]:
    """Create the demo chain on first run; load its wallets on later runs."""
    if (datadir / CONFIG_FILE).exists():
        found = []
        index = 0
        while _wallet_path(datadir, index).exists():
            found.append(read_key(_wallet_path(datadir, index)))
            index += 1
        return found
    keys = [SecretKey.generate() for _ in range(wallets)]
    node_key, validator_key = SecretKey.generate(), SecretKey.generate()
    genesis = make_genesis(
        ChainMode.PRIVATE,
        chain_name="meshchain-demo",
        validators=[validator_key],
        members=[node_key],
        allocations=[(address_from_public_key(k.public_key), DEMO_WALLET_FUNDS) for k in keys],
        block_interval_ms=block_interval_ms,
    )
    create_datadir(datadir, genesis, node_key, validator_key)
    for index, key in enumerate(keys):
        write_key(_wallet_path(datadir, index), key)
    return keys


@dataclass
class DemoStats:
    started: float = field(default_factory=time.monotonic)
    submitted: int = 0
    confirmed: int = 0
    blocks: int = 0

    def observe(self, action: Action) -> None:
        if isinstance(action, BlockAccepted):
            self.blocks += 1
            self.confirmed += action.tx_count


def _table(node: Node, stats: DemoStats, wallets: list[SecretKey]) -> Table:
    chain = node.chain
    elapsed = max(time.monotonic() - stats.started, 1e-9)
    table = Table(title=f"meshchain demo — chain {chain.chain_id.hex()[:16]}")
    table.add_column("height", justify="right")
    table.add_column("tip")
    table.add_column("mempool", justify="right")
    table.add_column("submitted", justify="right")
    table.add_column("confirmed", justify="right")
    table.add_column("tx/s", justify="right")
    table.add_column("supply ok")
    ledger = chain.ledger
    table.add_row(
        str(chain.height),
        chain.tip_hash.hex()[:16],
        str(len(node.mempool)),
        str(stats.submitted),
        str(stats.confirmed),
        f"{stats.confirmed / elapsed:.1f}",
        "yes" if ledger.total_balance() == ledger.expected_supply() else "NO",
    )
    for key in wallets[:3]:
        address = address_from_public_key(key.public_key)
        table.add_row(
            "",
            encode_address(address)[:20] + "…",
            f"{ledger.account_balance(address) / COIN:.2f}",
            "",
            "",
            "",
            "",
        )
    return table


async def _traffic(
    driver: NodeDriver, wallets: list[SecretKey], rate: float, stats: DemoStats, rng: random.Random
) -> None:
    node = driver.node
    while True:
        await asyncio.sleep(1 / rate)
        sender, recipient = rng.sample(wallets, 2)
        address = address_from_public_key(sender.public_key)
        body = TxBody(
            chain_id=node.chain.chain_id,
            sender=sender.public_key,
            recipient=address_from_public_key(recipient.public_key),
            amount=rng.randrange(1, DEMO_MAX_TRANSFER),
            fee=rng.randrange(*DEMO_FEE_RANGE),
            nonce=node.next_nonce(address),
        )
        driver.feed(TransactionSubmitted(encode(sign_transaction(body, sender))))
        stats.submitted += 1


async def run_demo(
    datadir: Path, blocks: int, rate: float, wallets: list[SecretKey], live: bool
) -> Node:
    home = open_datadir(datadir)
    config = NodeConfig(
        home.genesis(), home.validator_key(), home.beneficiary(), relay=home.relay_config()
    )
    store = SqliteChainStore(
        home.database,
        synchronous=home.config.storage.synchronous,
        tx_index=home.config.storage.tx_index,
    )
    node = Node(config, store, random.Random())
    driver = NodeDriver(node)
    stats = DemoStats()
    driver.observers.append(stats.observe)
    stop = stop_on_signals()
    console = Console(stderr=not live)
    target = node.chain.height + blocks
    traffic = asyncio.create_task(_traffic(driver, wallets, rate, stats, random.Random()))
    driver.feed(NodeStarted())
    try:
        with Live(
            _table(node, stats, wallets), console=console, auto_refresh=False, transient=False
        ) as view:
            while not stop.is_set() and (blocks == 0 or node.chain.height < target):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.25)
                view.update(_table(node, stats, wallets), refresh=True)
    finally:
        traffic.cancel()
        driver.stop()
        store.close()
    return node


@click.command()
@click.option(
    "--datadir",
    type=click.Path(path_type=Path),
    default=Path("demo-data"),
    show_default=True,
    help="Where the demo chain lives; an existing one resumes.",
)
@click.option(
    "--blocks",
    type=int,
    default=20,
    show_default=True,
    help="Stop after this many new blocks (0: run until Ctrl-C).",
)
@click.option("--wallets", type=click.IntRange(2, 1000), default=5, show_default=True)
@click.option(
    "--tx-rate",
    type=click.FloatRange(0.1, 10_000),
    default=20.0,
    show_default=True,
    help="Demo transactions submitted per second.",
)
@click.option(
    "--block-interval",
    type=click.FloatRange(0.1, 600),
    default=1.0,
    show_default=True,
    help="Seconds between blocks (new chains only).",
)
def demo(datadir: Path, blocks: int, wallets: int, tx_rate: float, block_interval: float) -> None:
    """Run a private PoA chain with demo traffic and a live table."""
    try:
        keys = prepare_demo(datadir, wallets, int(block_interval * 1000))
        if len(keys) < 2:
            raise click.ClickException(f"{datadir} is not a demo data directory")
        install_uvloop()
        node = asyncio.run(run_demo(datadir, blocks, tx_rate, keys, live=True))
    except MeshchainError as error:
        raise click.ClickException(str(error)) from None
    ledger = node.chain.ledger
    ok = ledger.total_balance() == ledger.expected_supply()
    click.echo()  # the live table leaves the cursor on its last line
    click.echo(
        f"height {node.chain.height}, state root {ledger.state_root().hex()[:16]}, "
        f"supply {'conserved' if ok else 'BROKEN'}; data in {datadir}"
    )
    if not ok:
        raise SystemExit(1)

"""A small network of real `meshchain node` processes for the dashboard's tests: a
private (PoA) chain, node 0 its validator, every node's `[api] network` naming the
others (as a devnet writes it), and a funded wallet to send transfers through the API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from processkit import ProcessNet, process_network

from meshchain.config import open_datadir, save_config
from meshchain.core.chain.genesis import ChainMode, chain_id
from meshchain.core.chain.tx import TxBody, sign_transaction, txid_of
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.wire.codec import encode

DEADLINE = 60.0  # seconds for any one condition: generous, the machine is shared
POLL_S = 0.1
BLOCK_INTERVAL_MS = 500
RPC_TIMEOUT_S = 10.0


@dataclass
class DashNet:
    net: ProcessNet
    wallet: SecretKey

    def url(self, index: int) -> str:
        node = self.net.nodes[index]
        return f"http://{node.host}:{node.api_port}/"

    def transfer(self, nonce: int) -> tuple[str, str]:
        """A signed transfer from the wallet: (txid, raw hex)."""
        sender = self.wallet.public_key
        body = TxBody(chain_id(self.net.genesis), sender, bytes(20), 7, 10_000, nonce)
        tx = sign_transaction(body, self.wallet)
        return txid_of(tx).hex(), encode(tx).hex()


@contextlib.contextmanager
def dashboard_network(root: Path, nodes: int) -> Iterator[DashNet]:
    """`nodes` started node processes; Dandelion++ is off, so a transfer sent to a node
    enters its mempool at once instead of waiting out a stem's embargo."""
    wallet = SecretKey.generate()
    with process_network(
        root,
        ChainMode.PRIVATE,
        validators=1,
        observers=nodes - 1,
        block_interval_ms=BLOCK_INTERVAL_MS,
        started=0,
        wallet=wallet,
    ) as net:
        for node in net.nodes:
            config = open_datadir(node.home).config
            config.relay.dandelion = False
            save_config(node.home, config)
        net.start()
        yield DashNet(net, wallet)


async def rpc(http: aiohttp.ClientSession, url: str, method: str, **params: Any) -> Any:
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    timeout = aiohttp.ClientTimeout(total=RPC_TIMEOUT_S)
    async with http.post(url, json=request, timeout=timeout) as response:
        answer = await response.json()
    assert "result" in answer, answer
    return answer["result"]


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` (connection errors count as not yet) until DEADLINE."""
    end = asyncio.get_running_loop().time() + DEADLINE
    while True:
        with contextlib.suppress(aiohttp.ClientConnectionError, TimeoutError):
            if await condition():
                return
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_S)


async def serving(http: aiohttp.ClientSession, dash: DashNet, height: int = 1) -> None:
    """Wait until every node's API answers and node 0 has made `height` blocks."""

    async def ready() -> bool:
        for index, node in enumerate(dash.net.nodes):
            assert node.process is not None
            assert node.process.poll() is None, node.log_text()[-3000:]
            status = await rpc(http, dash.url(index), "status")
            if index == 0 and status["sync_info"]["latest_block_height"] < height:
                return False
        return True

    await until(ready, f"every node serving and height {height}")

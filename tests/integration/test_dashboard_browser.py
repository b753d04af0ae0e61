"""The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven over
the DevTools protocol) opens node 0's page of a two-node network; the page loads
without a script error, goes live over the WebSocket, shows the height rising and the
whole network's graph, and a transfer sent through the API appears in its list."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp
import pytest
from chromium import chromium
from dashkit import DEADLINE, dashboard_network, rpc, serving

NODES = 2
CHROMIUM = shutil.which("chromium")
HEIGHT = "Number(document.getElementById('height').textContent)"


def test_the_dashboard_shows_blocks_the_network_and_a_new_transaction(tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("no `chromium` on PATH: apt-get install chromium (.ci/run does)")
    with dashboard_network(tmp_path / "net", NODES) as dash:

        async def scenario() -> None:
            async with aiohttp.ClientSession() as http:
                await serving(http, dash)
                async with chromium(CHROMIUM, tmp_path / "profile") as page:
                    await page.navigate(dash.url(0))
                    await page.wait_for("document.body.dataset.ready", "the first status", DEADLINE)
                    assert await page.evaluate("document.title") == "meshchain dashboard"
                    first = int(await page.evaluate(HEIGHT))
                    await page.wait_for(f"{HEIGHT} > {first}", "the height to rise", DEADLINE)
                    await page.wait_for(
                        "document.getElementById('live').textContent === 'live'"
                        " && Number(document.getElementById('live').dataset.events) > 0",
                        "notifications over the WebSocket",
                        DEADLINE,
                    )
                    # Both nodes, each asked by node 0, and the link between them.
                    await page.wait_for(
                        "document.querySelectorAll('#topology .node').length === 2"
                        " && document.querySelectorAll('#topology .node.down').length === 0"
                        " && document.querySelectorAll('#topology line.edge').length >= 1",
                        "the two-node graph",
                        DEADLINE,
                    )
                    txid, raw = dash.transfer(0)
                    sent = await rpc(http, dash.url(0), "broadcast_tx_sync", tx=raw)
                    assert sent["status"] == "accepted", sent
                    row = f"document.querySelector('#txs tr[data-hash=\"{txid}\"]')"
                    await page.wait_for(f"!!{row}", "the transfer in the list", DEADLINE)
                    text = await page.evaluate(f"{row}.textContent")
                    assert txid in text
                    width = await page.evaluate(f"{row}.getBoundingClientRect().width")
                    assert width > 0  # on screen, not merely in the document
                    await page.wait_for(
                        "document.querySelectorAll('#propagation circle').length > 0",
                        "a propagation measurement",
                        DEADLINE,
                    )
                    assert page.exceptions == []
                    assert await page.evaluate("document.getElementById('error').hidden"), (
                        await page.evaluate("document.getElementById('error').textContent")
                    )

        asyncio.run(asyncio.wait_for(scenario(), DEADLINE * 3))

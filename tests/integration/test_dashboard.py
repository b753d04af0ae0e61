"""The dashboard over plain HTTP, no browser, against two real node processes: its
files are served with their types and nothing else is; `topology`, `block_times` and
`propagation` report both nodes as measured; a WebSocket from another site's page is
refused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import pytest
from dashkit import DashNet, dashboard_network, rpc, serving, until

from meshchain.api.dashboard import FILES
from meshchain.api.rpc import INVALID_PARAMS, INVALID_REQUEST
from meshchain.config import NODE_KEY_FILE

NODES = 2
Scenario = Callable[[aiohttp.ClientSession, DashNet], Awaitable[None]]


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashNet]:
    with dashboard_network(tmp_path_factory.mktemp("dashboard"), NODES) as network:
        yield network


def run(dash: DashNet, scenario: Scenario) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            await serving(http, dash)
            await scenario(http, dash)

    asyncio.run(main())


def test_the_page_and_its_files_are_served_with_their_types(dash: DashNet) -> None:
    async def scenario(http: aiohttp.ClientSession, dash: DashNet) -> None:
        url = dash.url(0)
        async with http.get(url) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
            policy = response.headers["Content-Security-Policy"]
        assert "<title>meshchain dashboard</title>" in page
        assert 'src="/dashboard/app.js"' in page
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        expected = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
        assert expected == FILES
        for name, content_type in FILES.items():
            async with http.get(f"{url}dashboard/{name}") as response:
                assert response.status == 200, name
                assert response.content_type == content_type
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert len(await response.read()) > 100
        async with http.get(f"{url}dashboard/app.js") as response:
            script = await response.text()
        assert "/websocket" in script
        assert "http://" not in script.replace("http://www.w3.org/2000/svg", "")  # no CDN
        # POST / is still JSON-RPC.
        assert (await rpc(http, url, "status"))["node_info"]["mode"] == "private"

    run(dash, scenario)


def test_nothing_but_those_files_is_served(dash: DashNet) -> None:
    secret = (dash.net.nodes[0].home / NODE_KEY_FILE).read_text().strip()
    node = dash.net.nodes[0]

    async def raw_get(path: str) -> tuple[int, bytes]:
        """A request line sent as is: no client-side normalization of `..`."""
        reader, writer = await asyncio.open_connection(node.host, node.api_port)
        request = f"GET {path} HTTP/1.1\r\nHost: {node.host}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        answer = await reader.read()
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    async def scenario(http: aiohttp.ClientSession, dash: DashNet) -> None:
        for path in (
            "/dashboard/nope.js",
            "/dashboard/",
            "/dashboard/../config.toml",
            "/dashboard/..%2f..%2fkeys%2fnode.key",
            "/dashboard/%2e%2e/%2e%2e/keys/node.key",
            "/dashboard/app.js/../../keys/node.key",
            "/dashboard/....//keys/node.key",
            "/keys/node.key",
            "/config.toml",
            "/dashboard/APP.JS",
        ):
            status, body = await raw_get(path)
            assert status == 404, path
            assert secret.encode() not in body
            assert f'"code":{INVALID_REQUEST}'.encode() in body, (path, body)

    run(dash, scenario)


def test_topology_shows_both_nodes_and_their_link(dash: DashNet) -> None:
    async def scenario(http: aiohttp.ClientSession, dash: DashNet) -> None:
        ids = [(await rpc(http, dash.url(i), "status"))["node_info"]["id"] for i in range(NODES)]

        async def linked() -> bool:
            topology = await rpc(http, dash.url(0), "topology")
            return bool(topology["edges"])

        await until(linked, "a link in the topology")
        for index in range(NODES):
            topology = await rpc(http, dash.url(index), "topology")
            assert topology["network"] is True
            assert topology["truncated"] is False
            nodes = {node["id"]: node for node in topology["nodes"]}
            assert set(nodes) == set(ids)
            assert all(node["reachable"] for node in nodes.values())
            assert [node["id"] for node in nodes.values() if node["self"]] == [ids[index]]
            other = nodes[ids[1 - index]]
            assert other["api"] == dash.url(1 - index).rstrip("/")
            assert other["height"] >= 0
            for edge in topology["edges"]:
                assert {edge["source"], edge["target"]} == set(ids)
                assert edge["kind"] == "persistent"

    run(dash, scenario)


def test_block_times_and_propagation_are_measured_at_each_node(dash: DashNet) -> None:
    async def scenario(http: aiohttp.ClientSession, dash: DashNet) -> None:
        async def measured() -> bool:
            times = await rpc(http, dash.url(1), "block_times")
            return len(times["blocks"]) >= 2

        await until(measured, "two blocks measured at the follower")
        own = await rpc(http, dash.url(0), "block_times", limit=1)
        assert len(own["blocks"]) == 1
        assert (own["engine"], own["finality_depth"]) == ("poa", None)
        follower = await rpc(http, dash.url(1), "block_times")
        for times, produced in ((own, True), (follower, False)):
            for block in times["blocks"]:
                assert block["produced"] is produced
                assert block["seen_ms"] <= block["connected_ms"]
                assert block["final_ms"] is None  # PoA has no finality rule
        propagation = await rpc(http, dash.url(0), "propagation")
        first, second = propagation["nodes"]
        assert (first["self"], first["node_id"]) == (True, own["node_id"])
        assert (second["self"], second["node_id"]) == (False, follower["node_id"])
        assert second["error"] is None
        assert second["blocks"]
        assert {"height", "time_ms", "seen_ms", "connected_ms"} <= set(second["blocks"][0])
        request = {"jsonrpc": "2.0", "id": 1, "method": "block_times", "params": {"limit": 101}}
        async with http.post(dash.url(0), json=request) as response:
            assert (await response.json())["error"]["code"] == INVALID_PARAMS

    run(dash, scenario)


def test_a_websocket_from_another_sites_page_is_refused(dash: DashNet) -> None:
    async def scenario(http: aiohttp.ClientSession, dash: DashNet) -> None:
        url = dash.url(0)
        socket = url + "websocket"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(socket, headers={"Origin": "http://attacker.example"})
        assert refused.value.status == 403
        own_origin = url.rstrip("/")
        async with http.ws_connect(socket, headers={"Origin": own_origin}) as ws:
            request = {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": ["new_block"]}
            await ws.send_json(request)
            assert (await ws.receive_json(timeout=30))["result"]["event"] == "new_block"

    run(dash, scenario)

"""The JSON-RPC API and /metrics against a real node on 127.0.0.1: an in-process PoA
node (real SQLite store, real P2P service, the API on an ephemeral port), and once the
`meshchain node` process itself. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from meshchain.api.hub import NEW_TX
from meshchain.api.rpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNAUTHORIZED,
    UNAVAILABLE,
)
from meshchain.api.server import ApiLimits, ApiServer
from meshchain.cli.setup import COIN, make_genesis
from meshchain.config import open_datadir
from meshchain.core.chain.genesis import ChainMode, Genesis, chain_id
from meshchain.core.chain.tx import Transaction, TxBody, sign_transaction, txid_of
from meshchain.core.crypto.address import address_from_public_key, encode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import NodeStarted
from meshchain.core.node import Node, NodeConfig
from meshchain.core.peers.address import parse_address
from meshchain.core.peers.config import PeerConfig
from meshchain.core.transport.identity import new_noise_static_key
from meshchain.core.transport.session import AdmissionPolicy
from meshchain.core.wire.codec import encode
from meshchain.devnet import NodeProcess, free_port
from meshchain.runtime.driver import NodeDriver
from meshchain.runtime.network import P2PConfig, P2PService
from meshchain.storage.sqlite import SqliteChainStore

DEADLINE = 60.0  # generous: the machine is shared
BLOCK_INTERVAL_MS = 300
HOST = "127.0.0.1"
TOKEN = "s3cret-token"


def run(test: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner() as runner:
        runner.run(asyncio.wait_for(test(), DEADLINE * 2))


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    end = asyncio.get_running_loop().time() + DEADLINE
    while not await condition():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Chain:
    genesis: Genesis
    validator: SecretKey
    wallet: SecretKey
    identities: list[SecretKey]

    def transfer(self, nonce: int, amount: int = 5 * COIN, fee: int = 10_000) -> Transaction:
        body = TxBody(
            chain_id(self.genesis),
            self.wallet.public_key,
            bytes(20),
            amount,
            fee,
            nonce,
        )
        return sign_transaction(body, self.wallet)


def make_chain() -> Chain:
    rng = random.Random(11)
    validator, wallet = SecretKey.generate(rng), SecretKey.generate(rng)
    identities = [SecretKey.generate(rng) for _ in range(2)]
    genesis = make_genesis(
        ChainMode.PRIVATE,
        chain_name="api-test",
        validators=[validator],
        members=identities,
        allocations=[(address_from_public_key(wallet.public_key), 1_000 * COIN)],
        block_interval_ms=BLOCK_INTERVAL_MS,
    )
    return Chain(genesis, validator, wallet, identities)


@dataclass
class LiveNode:
    driver: NodeDriver
    service: P2PService
    store: SqliteChainStore
    port: int

    async def stop(self) -> None:
        self.driver.stop()
        await self.service.close()
        self.store.close()


async def start_node(chain: Chain, path: Path, index: int, *, tx_index: bool = True) -> LiveNode:
    identity = chain.identities[index]
    store = SqliteChainStore(path / f"chain{index}.sqlite", tx_index=tx_index)
    config = NodeConfig(
        chain.genesis,
        chain.validator if index == 0 else None,
        peers=PeerConfig(node_id=identity.public_key, discovery=False),
    )
    node = Node(config, store, random.Random(index))
    driver = NodeDriver(node)
    service = P2PService(
        driver,
        P2PConfig(identity, new_noise_static_key(), AdmissionPolicy(node.chain.chain_id)),
    )
    _, port = await service.listen(HOST, 0)
    driver.feed(NodeStarted())
    return LiveNode(driver, service, store, port)


@dataclass
class Api:
    """A node, its API server, and an HTTP client for it."""

    chain: Chain
    node: LiveNode
    server: ApiServer
    url: str
    http: aiohttp.ClientSession

    async def post(self, payload: Any, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.http.post(self.url, json=payload, headers=headers) as response:
            return await response.json()

    async def call(self, method: str, token: str | None = None, **params: Any) -> Any:
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        return await self.post(request, token)

    async def result(self, method: str, **params: Any) -> Any:
        answer = await self.call(method, TOKEN, **params)
        assert "error" not in answer, answer
        return answer["result"]

    async def error(self, method: str, token: str | None = None, **params: Any) -> Any:
        answer = await self.call(method, token, **params)
        assert "result" not in answer, answer
        return answer["error"]

    async def height(self, at_least: int) -> bool:
        status = await self.result("status")
        return bool(status["sync_info"]["latest_block_height"] >= at_least)


@contextlib.asynccontextmanager
async def api_node(
    tmp_path: Path, *, limits: ApiLimits | None = None, tx_index: bool = True
) -> AsyncIterator[Api]:
    chain = make_chain()
    node = await start_node(chain, tmp_path, 0, tx_index=tx_index)
    server = ApiServer(node.driver, token=TOKEN, p2p=node.service, limits=limits)
    host, port = await server.start(HOST, 0)
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(chain, node, server, f"http://{host}:{port}/", http)
    finally:
        await server.close()
        await node.stop()


# --- every method against a real node ---------------------------------------------------


def test_read_methods_describe_the_node_its_chain_and_its_peer(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_node(tmp_path) as api:
            follower = await start_node(api.chain, tmp_path, 1)
            try:
                await api.node.service.dial(HOST, follower.port)
                await until(lambda: api.height(2), "two blocks")
                status = await api.result("status")
                node_info, sync = status["node_info"], status["sync_info"]
                assert node_info["id"] == api.chain.identities[0].public_key.hex()
                assert node_info["network"] == chain_id(api.chain.genesis).hex()
                assert sync["finalized_height"] is None  # PoA has no finality rule
                assert sync["catching_up"] is False
                tip = await api.result("block")
                assert tip["height"] >= sync["latest_block_height"] >= 2
                second = await api.result("block", height=2)
                assert second["hash"] == (await api.result("block", hash=second["hash"]))["hash"]
                assert second["header"]["parent"] == (await api.result("block", height=1))["hash"]
                assert second["main_chain"]
                assert second["tx_count"] == len(second["txs"]) == 0

                async def connected() -> bool:
                    return bool((await api.result("net_info"))["n_peers"] == 1)

                await until(connected, "the follower in net_info")
                (peer,) = (await api.result("net_info"))["peers"]
                assert peer["node_id"] == api.chain.identities[1].public_key.hex()
                assert peer["direction"] == "outbound"
                assert peer["address"].startswith(HOST)
                missing = await api.error("block", height=10**9)
                assert missing["code"] == -32001
                assert "no block at height" in missing["message"]
            finally:
                await follower.stop()

    run(scenario)


def test_transactions_from_broadcast_to_block_and_account(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_node(tmp_path) as api:
            first, second = api.chain.transfer(0), api.chain.transfer(1)
            sync = await api.result("broadcast_tx_sync", tx=encode(first).hex())
            assert sync == {
                "hash": txid_of(first).hex(),
                "code": 0,
                "status": "accepted",
                "log": "",
            }
            again = await api.result("broadcast_tx_sync", tx=encode(first).hex())
            assert again["status"] == "known"
            wallet = encode_address(address_from_public_key(api.chain.wallet.public_key))
            account = await api.result("account", address=wallet)
            assert account["next_nonce"] == 1  # pending or already in a block
            pool = await api.result("mempool")
            assert pool["size"] == len(pool["txids"]) <= 1
            # The second in base64, waiting for its block.
            committed = await api.result(
                "broadcast_tx_commit", tx=base64.b64encode(encode(second)).decode()
            )
            assert committed["committed"]
            assert committed["check_tx"]["code"] == 0
            found = await api.result("tx", hash=txid_of(second).hex())
            assert found["status"] == "committed"
            assert (found["height"], found["block_hash"]) == (
                committed["height"],
                committed["block_hash"],
            )
            assert found["amount"] == 5 * COIN
            assert found["sender"] == wallet
            block = await api.result("block", height=committed["height"])
            assert txid_of(second).hex() in block["txs"]
            account = await api.result("account", address=wallet)
            assert account["nonce"] == 2
            assert account["next_nonce"] == 2
            assert account["balance"] < 1_000 * COIN - 10 * COIN
            # A replay is refused by the node with its reason.
            replay = await api.result("broadcast_tx_sync", tx=encode(second).hex())
            assert replay["status"] == "rejected", replay
            assert replay["reason"] == "bad_nonce", replay
            garbage = await api.result("broadcast_tx_sync", tx="00ff")
            assert garbage["reason"] == "malformed"
            assert garbage["hash"] is None

    run(scenario)


def test_tx_lookup_without_a_tx_index_is_a_clear_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_node(tmp_path, tx_index=False) as api:
            error = await api.error("tx", hash="ab" * 32)
            assert error["code"] == UNAVAILABLE
            assert "tx_index = false" in error["message"]

    run(scenario)


def test_bans_lists_a_ban_and_unban_needs_the_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_node(tmp_path) as api:
            manager = api.node.driver.node.peer_manager
            manager.ban(parse_address("10.1.2.3:26656"), api.node.driver.clock() + 60, "test")
            (entry,) = (await api.result("bans"))["bans"]
            assert (entry["ip"], entry["kind"], entry["reason"]) == ("10.1.2.3", "banned", "test")
            assert (await api.error("unban", ip="10.1.2.3"))["code"] == UNAUTHORIZED
            assert (await api.error("unban", "wrong", ip="10.1.2.3"))["code"] == UNAUTHORIZED
            assert (await api.error("broadcast_tx_sync", tx="00"))["code"] == UNAUTHORIZED
            assert (await api.result("unban", ip="10.1.2.3"))["removed"] is True
            assert (await api.result("bans"))["bans"] == []
            bad = await api.error("unban", TOKEN, ip="10.1.2")
            assert bad["code"] == INVALID_PARAMS
            assert "param ip" in bad["message"]

    run(scenario)


# --- bad input -----------------------------------------------------------------------------


def test_malformed_requests_get_json_rpc_errors_and_the_node_serves_on(tmp_path: Path) -> None:
    limits = ApiLimits(max_body_bytes=10_000, max_batch=5)

    async def raw(api: Api, body: bytes, **headers: str) -> tuple[int, Any]:
        headers.setdefault("Content-Type", "application/json")
        async with api.http.post(api.url, data=body, headers=headers) as response:
            return response.status, json.loads(await response.read() or b"null")

    async def scenario() -> None:
        async with api_node(tmp_path, limits=limits) as api:
            _, parsed = await raw(api, b'{"jsonrpc": "2.0", "method": ')
            assert parsed["error"]["code"] == PARSE_ERROR
            assert parsed["id"] is None
            wrong = await api.error("block", height="tip")
            assert wrong["code"] == INVALID_PARAMS
            assert wrong["message"] == "param height: expected integer, got a string"
            unknown = await api.error("eth_blockNumber")
            assert unknown["code"] == METHOD_NOT_FOUND
            assert "eth_blockNumber" in unknown["message"]
            status, big = await raw(api, b"[" + b"1," * 10_000 + b"1]")
            assert status == 413
            assert big["error"]["code"] == INVALID_REQUEST
            assert "10000 bytes" in big["error"]["message"]
            batch = [
                {"jsonrpc": "2.0", "id": "a", "method": "status"},
                {"jsonrpc": "2.0", "method": "status"},  # a notification: no answer
                {"jsonrpc": "1.0", "id": "b", "method": "status"},
                7,
            ]
            answers = await api.post(batch)
            assert [a.get("id") for a in answers] == ["a", "b", None]
            assert "result" in answers[0]
            assert [a["error"]["code"] for a in answers[1:]] == [INVALID_REQUEST] * 2
            too_many = await api.post([{"jsonrpc": "2.0", "id": 1, "method": "status"}] * 6)
            assert too_many["error"]["code"] == INVALID_REQUEST
            assert "at most 5" in str(too_many)
            status, only_notes = await raw(api, b'[{"jsonrpc": "2.0", "method": "status"}]')
            assert (status, only_notes) == (204, None)
            async with api.http.get(api.url + "nowhere") as response:
                assert response.status == 404
                assert (await response.json())["error"]["code"] == INVALID_REQUEST
            async with api.http.put(api.url) as response:
                assert response.status == 405
                assert "POST /" in (await response.json())["error"]["message"]
            status, form = await raw(api, b"a=1", **{"Content-Type": "text/plain"})
            assert status == 415
            assert "application/json" in form["error"]["message"]
            subscribe = await api.error("subscribe", event="new_block")
            assert subscribe["code"] == UNAVAILABLE
            assert "WebSocket" in subscribe["message"]
            assert (await api.result("status"))["node_info"]["chain_name"] == "api-test"

    run(scenario)


def test_a_client_trickling_its_request_is_cut_off(tmp_path: Path) -> None:
    limits = ApiLimits(idle_timeout=0.5, body_timeout=0.5, linger=0.5)

    async def scenario() -> None:
        async with api_node(tmp_path, limits=limits) as api:
            port = int(api.url.rsplit(":", 1)[1].strip("/"))
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b""  # closed on us
            writer.close()
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            answer = await asyncio.wait_for(reader.read(), DEADLINE)
            assert answer.startswith(b"HTTP/1.1 408")
            assert b'"code":-32600' in answer
            writer.close()
            assert (await api.result("status"))["sync_info"]["latest_block_height"] >= 0

    run(scenario)


# --- WebSocket ---------------------------------------------------------------------------


def test_websocket_subscribers_get_blocks_and_a_slow_one_is_dropped(tmp_path: Path) -> None:
    limits = ApiLimits(ws_queue=4)

    async def scenario() -> None:
        async with api_node(tmp_path, limits=limits) as api:
            ws_url = api.url + "websocket"
            async with (
                api.http.ws_connect(ws_url) as fast,
                api.http.ws_connect(ws_url) as slow,
            ):
                for ws, event, request_id in ((fast, "new_block", 1), (fast, NEW_TX, 2)):
                    params = {"event": event}
                    await ws.send_json(
                        {
                            "jsonrpc": "2.0",
                            "id": request_id,
                            "method": "subscribe",
                            "params": params,
                        }
                    )
                    answer = await ws.receive_json(timeout=DEADLINE)
                    assert answer["result"]["event"] == event
                note = await fast.receive_json(timeout=DEADLINE)
                assert note["method"] == "subscription"
                assert note["params"]["event"] == "new_block"
                assert note["params"]["result"]["height"] >= 1
                await slow.send_json(
                    {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": [NEW_TX]}
                )
                assert (await slow.receive_json(timeout=DEADLINE))["result"]["event"] == NEW_TX
                # From here the slow client reads nothing: big notifications fill its queue
                # and socket while the fast client reads every one.
                hub, pad = api.server.hub, "x" * 65_536
                for index in range(2_000):
                    hub.publish(NEW_TX, {"index": index, "pad": pad})
                    while True:
                        got = await fast.receive_json(timeout=DEADLINE)
                        if got["params"]["event"] == NEW_TX:
                            break
                    assert got["params"]["result"]["index"] == index
                    if hub.dropped:
                        break
                assert hub.dropped == 1
                assert len(hub.clients) == 1
                await fast.send_json({"jsonrpc": "2.0", "id": 9, "method": "status"})
                while (answer := await fast.receive_json(timeout=DEADLINE)).get("id") != 9:
                    pass
                assert answer["result"]["node_info"]["chain_name"] == "api-test"

    run(scenario)


# --- metrics and OpenRPC -------------------------------------------------------------------


def test_metrics_and_openrpc_are_served(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_node(tmp_path) as api:
            # With no peer yet the transaction goes to the mempool, not a Dandelion stem.
            await api.result("broadcast_tx_sync", tx=encode(api.chain.transfer(0)).hex())
            follower = await start_node(api.chain, tmp_path, 1)
            try:
                await api.node.service.dial(HOST, follower.port)
                await until(lambda: api.height(3), "three blocks")
                async with api.http.get(api.url + "metrics") as response:
                    assert response.status == 200
                    text = await response.text()
            finally:
                await follower.stop()
            samples = dict(
                line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")
            )
            assert float(samples["meshchain_chain_height"]) >= 3
            assert samples['meshchain_peers{direction="outbound",kind="persistent"}'] == "1.0"
            assert float(samples['meshchain_blocks_accepted_total{origin="produced"}']) >= 3
            assert float(samples["meshchain_transactions_accepted_total"]) == 1
            sent = [k for k in samples if k.startswith("meshchain_p2p_messages_sent_total")]
            received = [k for k in samples if k.startswith("meshchain_p2p_message_bytes_rec")]
            assert sent
            assert received
            assert all(float(samples[k]) > 0 for k in sent + received)
            assert float(samples["meshchain_p2p_wire_bytes_received_total"]) > 0
            assert float(samples["meshchain_block_commit_latency_seconds_count"]) >= 1
            for name in (
                "meshchain_mempool_transactions",
                "meshchain_mempool_bytes",
                'meshchain_bans{kind="banned"}',
                'meshchain_api_calls_total{method="status"}',
            ):
                assert name in samples, name
            assert "meshchain_rate_limited_messages_total" in text
            assert "meshchain_peers_punished_total" in text
            async with api.http.get(api.url + "openrpc.json") as response:
                document = await response.json()
            assert document == await api.result("rpc.discover")
            names = {method["name"] for method in document["methods"]}
            assert names >= {"status", "block", "broadcast_tx_commit", "subscribe", "unban"}

    run(scenario)


# --- the real `meshchain node` process ------------------------------------------------------


def test_the_node_process_serves_status_on_its_configured_api(tmp_path: Path) -> None:
    home, api_port = tmp_path / "node", free_port(HOST)
    node = NodeProcess(home, HOST, free_port(HOST), api_port=api_port)
    init = [sys.executable, "-m", "meshchain", "init", "--datadir", str(home)]
    init += ["--listen", f"{HOST}:{node.port}", "--api", f"{HOST}:{api_port}"]
    subprocess.run(init, check=True, capture_output=True, timeout=DEADLINE)
    network = chain_id(open_datadir(home).genesis()).hex()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            request = {"jsonrpc": "2.0", "id": 1, "method": "status"}

            async def answered() -> bool:
                try:
                    async with http.post(f"http://{HOST}:{api_port}/", json=request) as reply:
                        status = (await reply.json())["result"]
                except aiohttp.ClientConnectionError:
                    assert node.process is not None
                    assert node.process.poll() is None, node.log_text()
                    return False
                assert status["node_info"]["network"] == network
                return True

            await until(answered, "the node's API")

    node.start()
    try:
        run(scenario)
        assert "api on http://127.0.0.1:" in node.log_text()
    finally:
        node.stop()

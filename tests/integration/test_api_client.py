"""The API client against servers that misbehave on 127.0.0.1: nobody listening, a
listener that never answers, answers that are not JSON-RPC or far too long."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from meshchain.api import client
from meshchain.api.client import rpc
from meshchain.devnet import free_port
from meshchain.errors import NodeApiError, NodeUnreachableError

HOST = "127.0.0.1"
DEADLINE = 30.0
SHORT_TIMEOUT = 0.3  # the silent server's test: short, yet far above a loopback answer


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), DEADLINE))


@asynccontextmanager
async def http_server(body: bytes) -> AsyncIterator[str]:
    """A server answering every request with `body` (HTTP 200), as a node URL."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{HOST}:{port}/"
    finally:
        server.close()
        await server.wait_closed()


async def _call(url: str, **options: Any) -> Any:
    async with aiohttp.ClientSession() as session:
        return await rpc(session, url, "status", **options)


def test_nobody_listening_is_unreachable_connection_refused() -> None:
    url = f"http://{HOST}:{free_port(HOST)}/"
    with pytest.raises(NodeUnreachableError, match="Connection refused"):
        run(lambda: _call(url))


def test_a_listener_that_never_answers_times_out_as_unreachable() -> None:
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen()  # the kernel completes the handshake; nobody ever reads
        url = f"http://{HOST}:{silent.getsockname()[1]}/"
        with pytest.raises(NodeUnreachableError, match=f"within {SHORT_TIMEOUT:g} s"):
            run(lambda: _call(url, timeout=SHORT_TIMEOUT))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>hello</html>", "not JSON; is it a node"),
        (b'{"jsonrpc": "2.0", "id": 1}', "not a JSON-RPC answer"),
        (b"[1, 2]", "not a JSON-RPC answer"),
    ],
)
def test_answers_that_are_not_json_rpc_are_api_errors(body: bytes, message: str) -> None:
    async def scenario() -> None:
        async with http_server(body) as url:
            with pytest.raises(NodeApiError, match=message) as caught:
                await _call(url)
            assert not isinstance(caught.value, NodeUnreachableError)

    run(scenario)


def test_an_error_answer_keeps_its_code() -> None:
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32002, "message": "no token"}}

    async def scenario() -> None:
        async with http_server(json.dumps(error).encode()) as url:
            with pytest.raises(NodeApiError, match=r"^status: no token$") as caught:
                await _call(url)
            assert caught.value.code == -32002

    run(scenario)


def test_an_answer_over_the_limit_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "MAX_ANSWER_BYTES", 1_000)
    padding = "x" * 2_000
    answer = json.dumps({"jsonrpc": "2.0", "id": 1, "result": padding}).encode()

    async def scenario() -> None:
        async with http_server(answer) as url:
            with pytest.raises(NodeApiError, match="over 1000 bytes"):
                await _call(url)

    run(scenario)

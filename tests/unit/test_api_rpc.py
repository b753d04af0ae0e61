"""The JSON-RPC layer without sockets: the envelope, batches, params, error mapping, the
OpenRPC document. The dispatcher is async (methods may wait for a block), so each call
runs on a fresh event loop; nothing here does I/O or sleeps."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from pathlib import Path
from typing import Any

import pytest

from meshchain.api.hub import Hub
from meshchain.api.methods import NodeApi, check_result, decode_raw_tx
from meshchain.api.rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NODE_ERROR,
    PARSE_ERROR,
    TIMEOUT,
    UNAUTHORIZED,
    UNAVAILABLE,
    CallContext,
    Dispatcher,
    Method,
    Param,
    RpcError,
    openrpc_document,
)
from meshchain.chainkit import ChainKit
from meshchain.config import ConfigFile, DataDir
from meshchain.core.events import TransactionAccepted, TransactionRejected
from meshchain.core.node import Node, NodeConfig
from meshchain.core.store import MemoryStore
from meshchain.errors import ConfigError, RejectCode, StoreError
from meshchain.runtime.driver import NodeDriver

OPEN = CallContext(authorized=True)


async def _echo(context: CallContext, params: dict[str, Any]) -> Any:
    return params


async def _fails(context: CallContext, params: dict[str, Any]) -> Any:
    kind = params["kind"]
    if kind == "rpc":
        raise RpcError(-32001, "no such thing", {"hint": 1})
    if kind == "node":
        raise StoreError("disk on fire")
    if kind == "wait":
        await asyncio.Event().wait()
    raise KeyError("secret internals")


METHODS = [
    Method(
        "echo",
        _echo,
        "params back",
        (
            Param("height", {"type": "integer", "minimum": 0, "maximum": 10}, "h"),
            Param("name", {"type": "string", "maxLength": 3}, "n", required=False),
            Param("event", {"type": "string", "enum": ["a", "b"]}, "e", required=False),
        ),
    ),
    Method("fails", _fails, "errors", (Param("kind", {"type": "string"}, "k"),), timeout=0.05),
    Method("write", _echo, "needs the token", write=True),
    Method("push", _echo, "WebSocket only", websocket_only=True),
]


def answer(body: Any, context: CallContext = OPEN, max_batch: int = 3) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    text = asyncio.run(Dispatcher(METHODS, max_batch).handle(raw, context))
    return None if text is None else json.loads(text)


def call(method: str, params: Any = None, context: CallContext = OPEN) -> Any:
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method}
    if params is not None:
        request["params"] = params
    return answer(request, context)


def code(response: Any) -> int:
    return int(response["error"]["code"])


def test_a_good_call_echoes_its_id_with_the_result() -> None:
    assert call("echo", {"height": 3}) == {"jsonrpc": "2.0", "id": 7, "result": {"height": 3}}
    assert call("echo", [4, "ab"])["result"] == {"height": 4, "name": "ab"}


@pytest.mark.parametrize(
    "body",
    [b"{", b"\xff\xfe", b'{"a": NaN}', b"[" * 100_000 + b"]" * 100_000, b""],
)
def test_unparsable_bodies_are_parse_errors_with_a_null_id(body: bytes) -> None:
    response = answer(body)
    assert code(response) == PARSE_ERROR
    assert response["id"] is None
    assert response["error"]["message"].startswith("parse error")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (5, "a request is an object, not an integer"),
        ({"jsonrpc": "1.0", "id": 1, "method": "echo"}, 'member "jsonrpc" must be "2.0"'),
        ({"jsonrpc": "2.0", "id": 1, "method": 5}, 'member "method" must be a string'),
        ({"jsonrpc": "2.0", "id": {}, "method": "echo"}, "id must be a string"),
        ({"jsonrpc": "2.0", "id": True, "method": "echo"}, "id must be a string"),
        ({"jsonrpc": "2.0", "id": "x" * 300, "method": "echo"}, "id must be a string"),
    ],
)
def test_bad_envelopes_are_invalid_requests(request_: Any, message: str) -> None:
    response = answer(request_)
    assert code(response) == INVALID_REQUEST
    assert message in response["error"]["message"]


def test_unknown_method_is_named_and_long_names_are_cut() -> None:
    response = call("nope" * 100)
    assert code(response) == METHOD_NOT_FOUND
    assert "nopenope" in response["error"]["message"]
    assert len(response["error"]["message"]) < 120


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "echo needs param height"),
        ({"height": "1"}, "param height: expected integer, got a string"),
        ({"height": True}, "param height: expected integer, got a boolean"),
        ({"height": 1.5}, "param height: expected integer, got a number"),
        ({"height": -1}, "param height: must be >= 0"),
        ({"height": 11}, "param height: must be <= 10"),
        ({"height": 1, "name": "long"}, "param name: longer than 3 characters"),
        ({"height": 1, "event": "c"}, "param event: 'c' is not one of a, b"),
        ({"height": 1, "colour": 2}, "echo has no param 'colour'; it takes height, name, event"),
        ([1, "a", "a", 4], "echo takes at most 3 params"),
        ("height", "params must be an array or an object, not a string"),
    ],
)
def test_bad_params_say_what_is_wrong(params: Any, message: str) -> None:
    response = call("echo", params)
    assert code(response) == INVALID_PARAMS
    assert message in response["error"]["message"]


def test_handler_failures_map_to_codes_and_never_show_internals() -> None:
    rpc = call("fails", {"kind": "rpc"})["error"]
    assert rpc == {"code": -32001, "message": "no such thing", "data": {"hint": 1}}
    node = call("fails", {"kind": "node"})["error"]
    assert (node["code"], node["message"]) == (NODE_ERROR, "fails: disk on fire")
    assert code(call("fails", {"kind": "wait"})) == TIMEOUT
    bug = call("fails", {"kind": "bug"})["error"]
    assert bug == {"code": INTERNAL_ERROR, "message": "internal error in fails: KeyError"}


def test_write_methods_need_authorization_and_push_needs_a_websocket() -> None:
    refused = CallContext(authorized=False)
    assert code(call("write", context=refused)) == UNAUTHORIZED
    assert call("write", context=OPEN)["result"] == {}
    assert call("echo", {"height": 1}, refused)["result"] == {"height": 1}  # reads stay open
    assert code(call("push")) == UNAVAILABLE
    assert call("push", context=CallContext(True, client=object()))["result"] == {}


def test_notifications_get_no_answer_even_when_they_fail() -> None:
    assert answer({"jsonrpc": "2.0", "method": "echo", "params": {"height": 1}}) is None
    assert answer({"jsonrpc": "2.0", "method": "missing"}) is None


def test_batches_answer_each_call_and_are_bounded() -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": [1]},
        {"jsonrpc": "2.0", "method": "echo", "params": [2]},
        {"jsonrpc": "2.0", "id": 3, "method": "missing"},
    ]
    responses = answer(batch)
    assert [r["id"] for r in responses] == [1, 3]
    assert responses[0]["result"] == {"height": 1}
    assert code(responses[1]) == METHOD_NOT_FOUND
    assert code(answer([])) == INVALID_REQUEST
    too_many = answer([batch[0]] * 4)
    assert code(too_many) == INVALID_REQUEST
    assert "batch of 4 requests; at most 3" in too_many["error"]["message"]
    assert answer([batch[1], batch[1]]) is None  # notifications only


def test_openrpc_lists_every_method_from_the_table() -> None:
    document = openrpc_document(METHODS, "t", "1")
    assert [m["name"] for m in document["methods"]] == [m.name for m in METHODS]
    echo = document["methods"][0]
    assert [p["name"] for p in echo["params"]] == ["height", "name", "event"]
    assert echo["params"][0]["schema"] == {"type": "integer", "minimum": 0, "maximum": 10}
    assert document["methods"][2]["x-write"] is True


def test_every_method_of_the_node_is_in_the_docs() -> None:
    """docs/api.md documents each method of the node's table (no silent drift)."""
    driver = NodeDriver(Node(NodeConfig(ChainKit().genesis), MemoryStore(), random.Random(1)))
    api = NodeApi(driver, Hub(driver))
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    for method in api.methods:
        assert f"### `{method.name}`" in docs, method.name


def test_raw_transactions_are_read_as_hex_or_base64() -> None:
    data = bytes(range(200))
    assert decode_raw_tx(data.hex()) == data
    assert decode_raw_tx("0x" + data.hex().upper()) == data
    assert decode_raw_tx(base64.b64encode(data).decode()) == data
    with pytest.raises(RpcError) as caught:
        decode_raw_tx("not a tx!")
    assert caught.value.code == INVALID_PARAMS


def test_the_check_result_is_the_node_notice_for_that_transaction() -> None:
    other = TransactionAccepted(b"\x01" * 32)
    malformed = TransactionRejected(None, RejectCode.MALFORMED, "truncated", None)
    result = check_result(b"\x00", [other, malformed], known=False)
    assert result["status"] == "rejected"
    assert result["reason"] == "malformed"
    assert result["code"] == RejectCode.MALFORMED.value
    assert check_result(b"\x00", [other], known=False)["status"] == "ignored"


def test_api_listen_is_parsed_and_empty_means_no_api() -> None:
    config = ConfigFile()
    assert DataDir(Path("."), config).api_address() == ("127.0.0.1", 26657)
    config.api.listen = ""
    assert DataDir(Path("."), config).api_address() is None
    config.api.listen = "localhost"
    with pytest.raises(ConfigError, match=r"api\.listen"):
        DataDir(Path("."), config).api_address()

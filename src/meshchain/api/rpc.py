"""JSON-RPC 2.0 (jsonrpc.org/specification): request bytes in, response text out.

No HTTP here: the server hands in a body and sends back what `Dispatcher.handle`
returns (None when only notifications came), so every rule of the envelope, batches and
parameters is unit-tested without a socket. Methods are rows of one table; the OpenRPC
document is generated from the same rows, so it cannot drift from what is served.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from meshchain.errors import MeshchainError

log = logging.getLogger("meshchain.api")

# The spec's codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Server errors: the spec leaves -32000..-32099 to the implementation.
NODE_ERROR = -32000  # the node refused or failed (a MeshchainError says why)
NOT_FOUND = -32001  # no such block, transaction or subscription
UNAUTHORIZED = -32002  # a write method without the configured token
TIMEOUT = -32003  # the request, or the wait for a block, took too long
UNAVAILABLE = -32004  # not on this node or transport (no tx index, HTTP subscribe, stopping)
LIMIT_REACHED = -32005  # too many clients, subscriptions or waiters

# Ours: geth allows 1,000 requests a batch but also caps the response at 25 MB; we cap
# the count only, lower, since one `block` answer may list 25,000 transaction ids.
MAX_BATCH_REQUESTS = 100
# A method's answer, unless its row says otherwise. Ours: every read answers from memory
# or one SQLite query, in milliseconds; this bounds a stuck one.
REQUEST_TIMEOUT = 15.0
# Ours: ids are echoed back, so a long one is refused rather than copied into answers.
MAX_ID_LENGTH = 256
# Ours: an unknown method's name is quoted in the error up to this many characters.
MAX_QUOTED_NAME = 64

JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


class RpcError(Exception):
    """A JSON-RPC error: code, a message saying what is wrong, optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True)
class Param:
    """One named parameter; `schema` is the JSON Schema subset `check_value` enforces
    (type, minimum, maximum, minLength, maxLength, enum), also published by OpenRPC."""

    name: str
    schema: dict[str, Any]
    description: str
    required: bool = True


@dataclass
class CallContext:
    """Who is calling: whether the token matched (or none is set), and on WebSocket the
    client, which subscriptions attach to."""

    authorized: bool
    client: Any = None


Handler = Callable[[CallContext, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    summary: str
    params: tuple[Param, ...] = ()
    result: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    write: bool = False  # changes the node: needs the token when one is set
    websocket_only: bool = False  # subscriptions need a connection to push on
    timeout: float = REQUEST_TIMEOUT


def json_type(value: Any) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def check_value(name: str, value: Any, schema: dict[str, Any]) -> None:
    """Raise INVALID_PARAMS unless `value` fits `schema` (the subset our rows use)."""
    kind = schema.get("type")
    fits = {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        None: True,
    }[kind]
    if not fits:
        raise RpcError(INVALID_PARAMS, f"param {name}: expected {kind}, got {json_type(value)}")
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(map(str, schema["enum"]))
        raise RpcError(INVALID_PARAMS, f"param {name}: {value!r} is not one of {allowed}")
    if kind == "integer":
        if "minimum" in schema and value < schema["minimum"]:
            raise RpcError(INVALID_PARAMS, f"param {name}: must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise RpcError(INVALID_PARAMS, f"param {name}: must be <= {schema['maximum']}")
    if kind == "string":
        if len(value) < schema.get("minLength", 0):
            raise RpcError(INVALID_PARAMS, f"param {name}: empty or too short")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            limit = schema["maxLength"]
            raise RpcError(INVALID_PARAMS, f"param {name}: longer than {limit} characters")


def bind_params(method: Method, params: Any) -> dict[str, Any]:
    """Positional or named params as a checked dict of the method's names."""
    names = [param.name for param in method.params]
    if params is None:
        given: dict[str, Any] = {}
    elif isinstance(params, list):
        if len(params) > len(names):
            raise RpcError(
                INVALID_PARAMS,
                f"{method.name} takes at most {len(names)} params ({', '.join(names) or 'none'}),"
                f" got {len(params)}",
            )
        given = dict(zip(names, params))
    elif isinstance(params, dict):
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise RpcError(
                INVALID_PARAMS,
                f"{method.name} has no param {', '.join(map(repr, unknown))[:200]}; it takes"
                f" {', '.join(names) or 'none'}",
            )
        given = dict(params)
    else:
        raise RpcError(
            INVALID_PARAMS, f"params must be an array or an object, not {json_type(params)}"
        )
    for param in method.params:
        if param.name in given:
            check_value(param.name, given[param.name], param.schema)
        elif param.required:
            raise RpcError(INVALID_PARAMS, f"{method.name} needs param {param.name}")
    return given


def _valid_id(value: Any) -> bool:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return True
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class Dispatcher:
    """Answers request bodies by the method table; never raises for a request."""

    def __init__(
        self,
        methods: Iterable[Method],
        max_batch: int = MAX_BATCH_REQUESTS,
        on_call: Callable[[str], None] | None = None,
    ) -> None:
        self.methods = {method.name: method for method in methods}
        self.max_batch = max_batch
        self.on_call = on_call  # counts calls of known methods (metrics)

    async def handle(self, body: bytes | str, context: CallContext) -> str | None:
        """The response text for a request or batch; None when nothing is owed (the
        request was a notification, or a batch of notifications only)."""
        try:
            payload = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            detail = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
            return encode(error_response(None, PARSE_ERROR, f"parse error: {detail}"[:300]))
        if isinstance(payload, list):
            if not payload:
                return encode(error_response(None, INVALID_REQUEST, "empty batch"))
            if len(payload) > self.max_batch:
                message = f"batch of {len(payload)} requests; at most {self.max_batch}"
                return encode(error_response(None, INVALID_REQUEST, message))
            # Concurrent, as the spec allows: a batch takes as long as its slowest call.
            answers = await asyncio.gather(*(self._one(item, context) for item in payload))
            responses = [answer for answer in answers if answer is not None]
            return encode(responses) if responses else None
        answer = await self._one(payload, context)
        return None if answer is None else encode(answer)

    async def _one(self, request: Any, context: CallContext) -> dict[str, Any] | None:
        if not isinstance(request, dict):
            message = f"a request is an object, not {json_type(request)}"
            return error_response(None, INVALID_REQUEST, message)
        is_call = "id" in request  # without an id: a notification, owed no answer
        request_id = request.get("id")
        if not _valid_id(request_id):
            message = f"id must be a string (up to {MAX_ID_LENGTH} characters), an integer or null"
            return error_response(None, INVALID_REQUEST, message)
        if request.get("jsonrpc") != "2.0":
            return error_response(request_id, INVALID_REQUEST, 'member "jsonrpc" must be "2.0"')
        name = request.get("method")
        if not isinstance(name, str):
            message = f'member "method" must be a string, not {json_type(name)}'
            return error_response(request_id, INVALID_REQUEST, message)
        try:
            result = await self._call(name, request.get("params"), context)
        except RpcError as error:
            answer = error_response(request_id, error.code, error.message, error.data)
        else:
            answer = {"jsonrpc": "2.0", "id": request_id, "result": result}
        return answer if is_call else None

    async def _call(self, name: str, params: Any, context: CallContext) -> Any:
        method = self.methods.get(name)
        if method is None:
            quoted = name[:MAX_QUOTED_NAME]
            raise RpcError(METHOD_NOT_FOUND, f"no method {quoted!r}; rpc.discover lists them")
        if self.on_call is not None:
            self.on_call(name)
        if method.websocket_only and context.client is None:
            raise RpcError(UNAVAILABLE, f"{name} works over WebSocket only (GET /websocket)")
        if method.write and not context.authorized:
            raise RpcError(
                UNAUTHORIZED, f"{name} changes the node: send Authorization: Bearer <token>"
            )
        bound = bind_params(method, params)
        try:
            return await asyncio.wait_for(method.handler(context, bound), method.timeout)
        except RpcError:
            raise
        except TimeoutError:
            raise RpcError(TIMEOUT, f"{name} took longer than {method.timeout:g} s") from None
        except MeshchainError as error:
            raise RpcError(NODE_ERROR, f"{name}: {error}") from None
        except Exception as error:
            log.exception("API method %s failed", name)
            raise RpcError(
                INTERNAL_ERROR, f"internal error in {name}: {type(error).__name__}"
            ) from None


def openrpc_document(methods: Iterable[Method], title: str, version: str) -> dict[str, Any]:
    """The OpenRPC (spec.open-rpc.org) description of the method table."""
    return {
        "openrpc": "1.2.6",
        "info": {"title": title, "version": version},
        "methods": [
            {
                "name": method.name,
                "summary": method.summary,
                "paramStructure": "either",
                "params": [
                    {
                        "name": param.name,
                        "description": param.description,
                        "required": param.required,
                        "schema": param.schema,
                    }
                    for param in method.params
                ],
                "result": {"name": f"{method.name} result", "schema": method.result},
                "x-write": method.write,
                "x-websocket-only": method.websocket_only,
            }
            for method in methods
        ],
    }

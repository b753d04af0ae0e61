"""The API's HTTP server (aiohttp), one port: JSON-RPC 2.0 on POST /, the same over
WebSocket on /websocket (with subscriptions), the OpenRPC document on GET /openrpc.json,
Prometheus metrics on GET /metrics, and the dashboard on GET / (api/dashboard.py).

Every answer but the metrics is JSON: aiohttp's own 404, 405 and 413 pages become
JSON-RPC errors in a middleware, and a failing handler an internal error, never a
traceback. A client is bounded in time (headers, body) and size (body, batch), and a
WebSocket in its queue and subscriptions; none of them can hold up the node. A browser
may open a WebSocket from any site, so an upgrade whose Origin names another host is
refused: only the node's own dashboard (or a client sending no Origin, not a browser)
gets one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST
from yarl import URL

from meshchain.api.dashboard import PAGE, file_response
from meshchain.api.hub import (
    MAX_SUBSCRIPTIONS_PER_CLIENT,
    MAX_WS_CLIENTS,
    WS_QUEUE_SIZE,
    Hub,
    WsClient,
)
from meshchain.api.methods import NodeApi
from meshchain.api.metrics import NodeMetrics
from meshchain.api.network import NetworkView
from meshchain.api.rpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    LIMIT_REACHED,
    MAX_BATCH_REQUESTS,
    UNAUTHORIZED,
    CallContext,
    Dispatcher,
    encode,
    error_response,
)
from meshchain.api.timeline import BlockTimes
from meshchain.runtime.driver import NodeDriver
from meshchain.runtime.network import P2PService

log = logging.getLogger("meshchain.api")

MAX_BODY_BYTES = 1_000_000  # CometBFT's default max_body_bytes
# A connection without a complete request header this long after it opened or after its
# last answer is closed (aiohttp's keep-alive timer): an idle client and one trickling
# its headers alike. CometBFT's default read_timeout is 10 s.
IDLE_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0  # the whole body must arrive within this (CometBFT's read_timeout)
WS_HEARTBEAT = 30.0  # ours: ping a WebSocket this often; one that stops answering is closed
# Ours: after an error answer that ends a connection (a body too large or too slow), what
# the client still sends is read and dropped this long, so it sees the answer rather than
# a reset; aiohttp's default is 10 s, which a trickling client would get on top.
LINGER_TIME = 2.0
SHUTDOWN_TIMEOUT = 5.0  # ours: handlers still running when the node stops get this long
# geth answers 415 to other content types: a browser cannot send these cross-site
# without a CORS preflight, so a web page cannot make a local node broadcast.
JSON_CONTENT_TYPES = frozenset(
    {"application/json", "application/json-rpc", "application/jsonrequest"}
)
ENDPOINTS = (
    "POST / (JSON-RPC 2.0), GET / (dashboard), GET /websocket, GET /openrpc.json, GET /metrics"
)


@dataclass(frozen=True)
class ApiLimits:
    max_body_bytes: int = MAX_BODY_BYTES
    max_batch: int = MAX_BATCH_REQUESTS
    max_ws_clients: int = MAX_WS_CLIENTS
    max_subscriptions: int = MAX_SUBSCRIPTIONS_PER_CLIENT
    ws_queue: int = WS_QUEUE_SIZE
    idle_timeout: float = IDLE_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    linger: float = LINGER_TIME


def json_error(status: int, code: int, message: str) -> web.Response:
    """An HTTP error whose body is a JSON-RPC error (the request's id is unknown)."""
    return web.Response(
        status=status,
        text=encode(error_response(None, code, message)),
        content_type="application/json",
    )


def same_origin(request: web.BaseRequest) -> bool:
    """No Origin header (not a browser), or a page from the host this server was reached
    at. Scheme and port are not compared: a reverse proxy terminating TLS serves the
    page over https on 443 and hands the upgrade on over http."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        seen, served = URL(origin).host, URL(f"http://{request.host}").host
    except ValueError:
        return False
    return seen is not None and seen == served


class ApiServer:
    """The node's API; `start` it on a host and port, `close` it before the node stops."""

    def __init__(
        self,
        driver: NodeDriver,
        *,
        token: str = "",
        p2p: P2PService | None = None,
        limits: ApiLimits | None = None,
        network: Sequence[str] = (),
    ) -> None:
        """`network`: other nodes' API URLs, for the dashboard's whole-network view."""
        self.limits = limits or ApiLimits()
        self.hub = Hub(driver, self.limits.max_ws_clients, self.limits.max_subscriptions)
        self.api = NodeApi(driver, self.hub, p2p)
        self.times = BlockTimes(driver)
        self.network = NetworkView(self.api, self.times, network)
        self.api.methods += self.times.methods() + self.network.methods()
        self.metrics = NodeMetrics(driver, p2p, lambda: len(self.hub.clients))
        self.dispatcher = Dispatcher(
            self.api.methods, self.limits.max_batch, self.metrics.count_call
        )
        self._token = token.encode()
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application(
            client_max_size=self.limits.max_body_bytes, middlewares=[self._json_errors]
        )
        app.router.add_post("/", self._rpc)
        app.router.add_get("/", self._dashboard)
        app.router.add_get("/dashboard/{name}", self._dashboard)
        app.router.add_get("/websocket", self._websocket)
        app.router.add_get("/openrpc.json", self._openrpc)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; the bound address (port 0 picks a free one)."""
        self._runner = web.AppRunner(
            self.application(),
            access_log=None,
            keepalive_timeout=self.limits.idle_timeout,
            lingering_time=self.limits.linger,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0]
        if not self._token and host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("API on %s without [api] token: anyone who reaches it can write", host)
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        """Stop serving: WebSockets are cut, waiting calls cancelled."""
        for client in list(self.hub.clients):
            client.abort()
        self.hub.detach()
        self.metrics.detach()
        self.times.detach()
        await self.network.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def authorized(self, request: web.BaseRequest) -> bool:
        """No token configured, or `Authorization: Bearer <token>` carries it."""
        if not self._token:
            return True
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        given = credential.strip().encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(given, self._token)

    # --- handlers -----------------------------------------------------------------------

    @web.middleware
    async def _json_errors(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return json_error(error.status, INVALID_REQUEST, self._explain(request, error))
        except Exception:
            log.exception("API request %s %s failed", request.method, request.path)
            return json_error(500, INTERNAL_ERROR, "internal error")

    def _explain(self, request: web.Request, error: web.HTTPException) -> str:
        path = request.path[:100]
        if error.status == 404:
            return f"nothing at {path}; this server has {ENDPOINTS}"
        if error.status == 405:
            return f"{request.method} is not served at {path}; this server has {ENDPOINTS}"
        if error.status == 413:
            return f"request body over {self.limits.max_body_bytes} bytes"
        return f"{error.status} {error.reason}"

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        if request.content_type not in JSON_CONTENT_TYPES:
            message = f"Content-Type {request.content_type!r}: send application/json"
            return json_error(415, INVALID_REQUEST, message)
        length = request.content_length
        if length is not None and length > self.limits.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(self.limits.max_body_bytes, length)
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                body = await request.read()
        except TimeoutError:
            response = json_error(
                408, INVALID_REQUEST, f"body not received within {self.limits.body_timeout:g} s"
            )
            response.force_close()
            return response
        answer = await self.dispatcher.handle(body, CallContext(self.authorized(request)))
        if answer is None:
            return web.Response(status=204)  # notifications only: nothing is owed
        return web.Response(text=answer, content_type="application/json")

    async def _dashboard(self, request: web.Request) -> web.StreamResponse:
        return file_response(request.match_info.get("name", PAGE), request.host)

    async def _openrpc(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=encode(self.api.openrpc()), content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if len(self.hub.clients) >= self.limits.max_ws_clients:
            full = f"{len(self.hub.clients)} WebSocket clients connected, the limit"
            return json_error(503, LIMIT_REACHED, full)
        if not same_origin(request):
            origin = request.headers.get("Origin", "")[:100]
            return json_error(403, UNAUTHORIZED, f"WebSocket from origin {origin!r} refused")
        ws = web.WebSocketResponse(max_msg_size=self.limits.max_body_bytes, heartbeat=WS_HEARTBEAT)
        await ws.prepare(request)
        transport = request.transport
        sender: asyncio.Task[None] | None = None

        def abort() -> None:
            if sender is not None:
                sender.cancel()
            if transport is not None:
                transport.abort()

        client = WsClient(self.limits.ws_queue, abort)
        sender = asyncio.create_task(self._send_loop(ws, client))
        self.hub.add(client)
        context = CallContext(self.authorized(request), client)
        try:
            async for frame in ws:
                if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                answer = await self.dispatcher.handle(frame.data, context)
                if answer is not None and not client.push(answer):
                    self.hub.drop(client)
                    break
        finally:
            self.hub.remove(client)
            sender.cancel()
        return ws

    async def _send_loop(self, ws: web.WebSocketResponse, client: WsClient) -> None:
        """Write the client's queue out; a write waits while the client does not read,
        and meanwhile the queue fills until the hub drops the client."""
        try:
            while True:
                await ws.send_str(await client.queue.get())
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the connection went away under us
            log.debug("WebSocket send failed: %s", error)
            client.abort()

"""The network as one node's API sees it, for the dashboard: `topology` (nodes and the
peer links between them) and `propagation` (every node's `block_times`).

A page may call only its own origin, so the node asks the others itself: the API URLs
in `[api] network` (a devnet writes into each node's config the others'), one JSON-RPC
batch each, concurrently, each bounded in time and in bytes. An answer is shared for
NETWORK_CACHE_S, so however many dashboards poll, a node asks each other node at most
about once a second per method. Without `[api] network`: this node and its peers.
What other nodes answer is checked for shape; a node that answers badly or not at all
is shown as unreachable, with the reason.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp

from meshchain.api.methods import NodeApi
from meshchain.api.rpc import CallContext, Method
from meshchain.api.timeline import BLOCK_TIMES_DEFAULT, BlockTimes
from meshchain.config import MAX_API_NETWORK

NETWORK_TIMEOUT = 2.0  # ours: seconds for another node's whole answer; a page waits this long
# Ours: bytes of one node's answer (a net_info of 127 peers is about 40 kB).
MAX_REMOTE_ANSWER_BYTES = 1_000_000
NETWORK_CACHE_S = 1.0  # ours: answers shared by every caller for this long
MAX_TOPOLOGY_NODES = 256  # ours: nodes in one answer, peers of peers included
MAX_TOPOLOGY_EDGES = 4_096  # ours: links in one answer
MAX_ERROR_TEXT = 200  # ours: characters of a failure's description
MAX_LABEL = 64  # ours: characters of a node's label taken from another node's answer
# What a chart needs of another node's block_times entry (the first four are required).
TIMING_FIELDS = ("height", "time_ms", "seen_ms", "connected_ms", "final_ms")

T = TypeVar("T")
Fetch = Callable[[], Awaitable[T]]


class RemoteError(Exception):
    """Another node's API did not answer, or not as expected."""


@dataclass
class Report:
    """What one node said: its status and peers, or why it said nothing."""

    api: str | None  # None: this node
    status: dict[str, Any] | None = None
    net_info: dict[str, Any] | None = None
    error: str | None = None


class Shared(Generic[T]):
    """One fetch at a time, its result reused for `ttl` seconds by every caller; a
    caller that gives up does not cancel it for the others."""

    def __init__(self, fetch: Fetch[T], ttl: float = NETWORK_CACHE_S) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._task: asyncio.Task[T] | None = None
        self._fresh_until = 0.0

    async def get(self) -> T:
        now = asyncio.get_running_loop().time()
        if self._task is None or (self._task.done() and now >= self._fresh_until):
            self._task = asyncio.ensure_future(self._fetch())
            self._fresh_until = now + self._ttl
        return await asyncio.shield(self._task)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or RemoteError past `limit` bytes (read no further)."""
    if response.content_length is not None and response.content_length > limit:
        raise RemoteError(f"answer of {response.content_length} bytes, over {limit}")
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise RemoteError(f"answer over {limit} bytes")
    return bytes(body)


async def remote_batch(
    session: aiohttp.ClientSession, url: str, calls: Sequence[tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The results of one batch of calls, in order; RemoteError for any failure."""
    batch = [
        {"jsonrpc": "2.0", "id": index, "method": method, "params": params}
        for index, (method, params) in enumerate(calls)
    ]
    try:
        async with (
            asyncio.timeout(NETWORK_TIMEOUT),
            session.post(url, json=batch, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise RemoteError(f"HTTP {response.status}")
            answers = json.loads(await read_capped(response, MAX_REMOTE_ANSWER_BYTES))
    except TimeoutError:
        raise RemoteError(f"no answer within {NETWORK_TIMEOUT:g} s") from None
    except (aiohttp.ClientError, ValueError) as error:
        raise RemoteError(f"{type(error).__name__}: {error}"[:MAX_ERROR_TEXT]) from None
    if not isinstance(answers, list):
        raise RemoteError("not a batch answer")
    by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
    results = []
    for index, (method, _) in enumerate(calls):
        result = by_id.get(index, {}).get("result")
        if not isinstance(result, dict):
            raise RemoteError(f"{method}: {str(by_id.get(index))[:MAX_ERROR_TEXT]}")
        results.append(result)
    return results


def _node_entry(report: Report, own: bool) -> dict[str, Any]:
    """A node of the graph from its status; KeyError or TypeError if malformed."""
    assert report.status is not None
    info, sync = report.status["node_info"], report.status["sync_info"]
    return {
        "id": str(info["id"]),
        "label": str(info["listen_addr"] or info["id"][:12])[:MAX_LABEL],
        "api": report.api,
        "self": own,
        "reachable": True,
        "height": int(sync["latest_block_height"]),
        "finalized": sync["finalized_height"],
        "peers": int(report.status["peers"]),
        "mempool": int(report.status["mempool_size"]),
        "error": None,
    }


def build_topology(reports: Sequence[Report]) -> dict[str, Any]:
    """Nodes and directed links (dialer to listener) from each node's status and
    net_info; the first report is this node. Peers nobody asked join as nodes whose
    `reachable` is null. Bounded by MAX_TOPOLOGY_NODES and MAX_TOPOLOGY_EDGES."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    truncated = False
    listed: list[tuple[str, list[Any]]] = []
    for index, report in enumerate(reports):
        key = f"api:{report.api}"
        try:
            if report.error is None and report.net_info is not None:
                entry = _node_entry(report, index == 0)
                peers = report.net_info["peers"]
                if not isinstance(peers, list):
                    raise TypeError("peers is not a list")
                nodes.setdefault(entry["id"], entry)
                listed.append((entry["id"], peers))
                continue
        except (KeyError, TypeError, ValueError) as error:
            report.error = f"malformed answer: {error!r}"[:MAX_ERROR_TEXT]
        nodes[key] = {"id": key, "label": report.api, "api": report.api, "self": False}
        nodes[key].update(reachable=False, error=report.error)
    for node_id, peers in listed:
        for peer in peers:
            if not isinstance(peer, dict) or not isinstance(peer.get("node_id"), str):
                continue
            other = peer["node_id"]
            if other not in nodes:
                if len(nodes) >= MAX_TOPOLOGY_NODES:
                    truncated = True
                    continue
                label = str(peer.get("listen") or peer.get("address") or other[:12])[:MAX_LABEL]
                nodes[other] = {"id": other, "label": label, "api": None, "self": False}
                nodes[other].update(reachable=None, error=None)
            outbound = peer.get("direction") == "outbound"
            link = (node_id, other) if outbound else (other, node_id)
            if link not in edges and len(edges) >= MAX_TOPOLOGY_EDGES:
                truncated = True
                continue
            edge = edges.setdefault(link, {"source": link[0], "target": link[1]})
            if outbound or "kind" not in edge:  # the dialer knows what it dialed for
                edge.update(kind=peer.get("kind"), ping_ms=peer.get("ping_ms"))
    return {
        "nodes": list(nodes.values()),
        "edges": list(edges.values()),
        "network": len(reports) > 1,
        "truncated": truncated,
    }


class NetworkView:
    """`topology` and `propagation` over this node and the nodes at `urls`."""

    def __init__(self, api: NodeApi, times: BlockTimes, urls: Sequence[str]) -> None:
        if len(urls) > MAX_API_NETWORK:
            raise ValueError(f"{len(urls)} network URLs, at most {MAX_API_NETWORK}")
        self.api = api
        self.times = times
        self.urls = list(urls)
        self._session: aiohttp.ClientSession | None = None
        self._reports: Shared[list[Report]] = Shared(self._ask_status)
        self._timings: Shared[list[dict[str, Any]]] = Shared(self._ask_times)

    async def close(self) -> None:
        self._reports.cancel()
        self._timings.cancel()
        if self._session is not None:
            await self._session.close()

    def methods(self) -> list[Method]:
        return [
            Method(
                "topology",
                self.topology,
                "Nodes and peer links: this node and its peers, or all of [api] network",
            ),
            Method(
                "propagation",
                self.propagation,
                f"The last {BLOCK_TIMES_DEFAULT} block_times of this node and of [api] network",
            ),
        ]

    async def topology(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        own = Report(None, await self.api.status(context, {}), await self.api.net_info(context, {}))
        others = await self._reports.get() if self.urls else []
        return build_topology([own, *others])

    async def propagation(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        own = {**self.times.json(), "api": None, "self": True, "error": None}
        others = await self._timings.get() if self.urls else []
        return {"nodes": [own, *others]}

    # --- asking the others --------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _ask_status(self) -> list[Report]:
        async def ask(url: str) -> Report:
            try:
                status, peers = await remote_batch(
                    self._client(), url, [("status", {}), ("net_info", {})]
                )
            except RemoteError as error:
                return Report(url, error=str(error))
            return Report(url, status, peers)

        return list(await asyncio.gather(*map(ask, self.urls)))

    async def _ask_times(self) -> list[dict[str, Any]]:
        async def ask(url: str) -> dict[str, Any]:
            failed = {"api": url, "self": False, "blocks": [], "node_id": None}
            try:
                (times,) = await remote_batch(self._client(), url, [("block_times", {})])
                blocks = times["blocks"]
                if not isinstance(blocks, list):
                    raise RemoteError("block_times: blocks is not a list")
            except (RemoteError, KeyError) as error:
                return {**failed, "error": str(error)[:MAX_ERROR_TEXT]}
            kept = [t for t in map(_timing, blocks[-BLOCK_TIMES_DEFAULT:]) if t is not None]
            about = {key: times.get(key) for key in ("node_id", "engine", "finality_depth")}
            return {**about, "blocks": kept, "api": url, "self": False, "error": None}

        return list(await asyncio.gather(*map(ask, self.urls)))


def _timing(entry: Any) -> dict[str, Any] | None:
    """A block_times entry reduced to what a chart plots; None if it is not one."""
    if not isinstance(entry, dict):
        return None
    kept = {name: entry.get(name) for name in TIMING_FIELDS}
    if not all(type(kept[name]) is int for name in TIMING_FIELDS[:4]):
        return None
    if kept["final_ms"] is not None and type(kept["final_ms"]) is not int:
        kept["final_ms"] = None
    return kept

"""The dashboard's pure parts: the topology built from what each node reports (bad
answers and bounds included), `[api] network` checking, and the files' headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from meshchain.api.dashboard import content_security_policy, file_response
from meshchain.api.network import MAX_TOPOLOGY_NODES, Report, build_topology
from meshchain.config import MAX_API_NETWORK, ConfigFile, DataDir
from meshchain.errors import ConfigError


def status(node_id: str, height: int = 5) -> dict[str, Any]:
    return {
        "node_info": {"id": node_id, "listen_addr": f"127.0.0.1:{height}"},
        "sync_info": {"latest_block_height": height, "finalized_height": None},
        "peers": 1,
        "mempool_size": 0,
    }


def peer(node_id: str, direction: str, kind: str = "persistent") -> dict[str, Any]:
    return {"node_id": node_id, "direction": direction, "kind": kind, "ping_ms": 1.5}


def test_both_ends_of_a_connection_make_one_link_from_dialer_to_listener() -> None:
    own = Report(None, status("a"), {"peers": [peer("b", "outbound"), peer("c", "inbound")]})
    other = Report("http://b", status("b"), {"peers": [peer("a", "inbound", "inbound")]})
    topology = build_topology([own, other])
    assert topology["network"] is True
    nodes = {node["id"]: node for node in topology["nodes"]}
    assert (nodes["a"]["self"], nodes["b"]["self"]) == (True, False)
    assert nodes["b"]["api"] == "http://b"
    assert nodes["c"]["reachable"] is None  # a peer nobody asked
    links = {(e["source"], e["target"]): e for e in topology["edges"]}
    assert set(links) == {("a", "b"), ("c", "a")}
    assert links[("a", "b")]["kind"] == "persistent"  # the dialer's view wins


def test_a_node_that_fails_or_answers_nonsense_is_shown_unreachable() -> None:
    own = Report(None, status("a"), {"peers": []})
    down = Report("http://down", error="no answer within 2 s")
    nonsense = Report("http://odd", {"node_info": 7}, {"peers": []})
    bad_peers = Report("http://bad", status("d"), {"peers": "many"})
    topology = build_topology([own, down, nonsense, bad_peers])
    unreachable = {n["api"]: n["error"] for n in topology["nodes"] if n["reachable"] is False}
    assert unreachable["http://down"] == "no answer within 2 s"
    assert unreachable["http://odd"].startswith("malformed answer")
    assert unreachable["http://bad"].startswith("malformed answer")
    assert topology["edges"] == []


def test_peers_beyond_the_node_bound_are_left_out_and_flagged() -> None:
    peers: list[Any] = [peer(f"p{i}", "outbound") for i in range(MAX_TOPOLOGY_NODES + 10)]
    peers += [{"node_id": 5}, "junk"]
    topology = build_topology([Report(None, status("a"), {"peers": peers})])
    assert len(topology["nodes"]) == MAX_TOPOLOGY_NODES
    assert len(topology["edges"]) == MAX_TOPOLOGY_NODES - 1
    assert topology["truncated"] is True
    assert topology["network"] is False


def home(**api: object) -> DataDir:
    return DataDir(Path("."), msgspec.convert({"api": api}, ConfigFile))


def test_api_network_takes_http_urls_up_to_its_bound() -> None:
    assert home().api_network() == []
    urls = ["http://127.0.0.11:26657", "https://node.example:443/"]
    assert home(network=urls).api_network() == urls
    with pytest.raises(ConfigError, match=r"api.network\[1\]"):
        home(network=["http://a:1", "ftp://b:2"]).api_network()
    with pytest.raises(ConfigError, match=r"api.network\[0\]"):
        home(network=["http://"]).api_network()
    with pytest.raises(ConfigError, match="at most"):
        home(network=["http://a:1"] * (MAX_API_NETWORK + 1)).api_network()


def test_only_listed_files_are_served_under_a_policy_naming_only_this_origin() -> None:
    for name in ("../config.toml", "keys/node.key", "", "APP.JS", "static/app.js"):
        with pytest.raises(web.HTTPNotFound):
            file_response(name, "127.0.0.1:26657")
    response = file_response("app.js", "127.0.0.1:26657")
    assert response.content_type == "text/javascript"
    policy = response.headers["Content-Security-Policy"]
    assert "connect-src 'self' ws://127.0.0.1:26657 wss://127.0.0.1:26657;" in policy
    # A Host header that could break out of the policy is not written into it.
    assert "connect-src 'self';" in content_security_policy("evil; script-src *")

"""The node's JSON-RPC methods, in CometBFT's style, and their table.

Reads come from `driver.node` state (the chain, the mempool, the peer manager); writes
go through `NodeDriver.feed` or the peer manager, and their answer is read from the
actions the node returns, so the API says exactly what the node did.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import itertools
from typing import Any

from meshchain import __version__
from meshchain.api.hub import EVENTS, Hub
from meshchain.api.rpc import (
    INVALID_PARAMS,
    LIMIT_REACHED,
    NOT_FOUND,
    REQUEST_TIMEOUT,
    TIMEOUT,
    UNAVAILABLE,
    CallContext,
    Method,
    Param,
    RpcError,
    openrpc_document,
)
from meshchain.core.chain.block import Block, block_hash
from meshchain.core.chain.tx import MAX_TX_SIZE, TX_CODEC, Transaction, txid_of
from meshchain.core.consensus import BftEngine
from meshchain.core.consensus.bftwire import Commit
from meshchain.core.crypto.address import address_from_public_key, decode_address, encode_address
from meshchain.core.events import (
    Action,
    TransactionAccepted,
    TransactionRejected,
    TransactionStemmed,
    TransactionSubmitted,
)
from meshchain.core.wire.codec import encode
from meshchain.errors import CryptoError, DecodeError, StoreError
from meshchain.runtime.driver import NodeDriver
from meshchain.runtime.network import P2PService

# CometBFT's default timeout_broadcast_tx_commit: how long broadcast_tx_commit waits
# for a block holding the transaction.
BROADCAST_COMMIT_TIMEOUT = 10.0
MEMPOOL_TXIDS_DEFAULT = 100  # ours: enough to see what is waiting...
MAX_MEMPOOL_TXIDS = 1_000  # ...and a bound on one answer (66 characters each)
# A raw transaction as text: hex (two characters a byte, maybe "0x") or base64.
MAX_TX_TEXT = 2 * MAX_TX_SIZE + 2
HASH_SCHEMA = {"type": "string", "minLength": 64, "maxLength": 66}  # hex, maybe "0x"


def _hash_param(name: str, text: str) -> bytes:
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise RpcError(INVALID_PARAMS, f"param {name}: not hex") from None
    if len(value) != 32:
        raise RpcError(INVALID_PARAMS, f"param {name}: {len(value)} bytes, a hash is 32")
    return value


def decode_raw_tx(text: str) -> bytes:
    """A raw transaction given as hex (optionally 0x-prefixed) or standard base64.

    A text made only of hex digits is read as hex: a base64 encoding of a transaction
    (at least 170 bytes) made only of hex digits has odds below 10^-100."""
    hex_text = text.removeprefix("0x")
    if all(c in "0123456789abcdefABCDEF" for c in hex_text) and len(hex_text) % 2 == 0:
        return bytes.fromhex(hex_text)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RpcError(INVALID_PARAMS, "param tx: neither hex nor base64") from None


def commit_json(commit: Commit | None) -> dict[str, Any] | None:
    if commit is None:
        return None
    return {
        "height": commit.height,
        "round": commit.round,
        "block_hash": commit.block_hash.hex(),
        "signatures": [
            {"validator": sig.validator, "signature": sig.signature.hex()}
            for sig in commit.signatures
        ],
    }


def tx_json(tx: Transaction, txid: bytes) -> dict[str, Any]:
    body = tx.body
    return {
        "hash": txid.hex(),
        "sender": encode_address(address_from_public_key(body.sender)),
        "sender_key": body.sender.hex(),
        "recipient": encode_address(body.recipient),
        "amount": body.amount,
        "fee": body.fee,
        "nonce": body.nonce,
        "data": body.data.hex(),
        "signature": tx.signature.hex(),
        "raw": encode(tx).hex(),
    }


def check_result(raw: bytes, actions: list[Action], known: bool) -> dict[str, Any]:
    """The node's answer to a submitted transaction, read from its notices."""
    try:
        txid: bytes | None = txid_of(TX_CODEC.decode(raw))
    except DecodeError:
        txid = None
    for action in actions:
        if isinstance(action, TransactionAccepted) and action.txid == txid:
            return _check(txid, 0, "accepted", "")
        if isinstance(action, TransactionStemmed) and action.txid == txid:
            return _check(txid, 0, "stemmed", "sent on the Dandelion++ stem")
        if isinstance(action, TransactionRejected) and action.txid in (txid, None):
            check = _check(txid, action.code.value, "rejected", action.detail)
            return {**check, "reason": action.code.name.lower()}
    status = "known" if known else "ignored"
    return _check(txid, 0, status, "this node has the transaction already" if known else "")


def _check(txid: bytes | None, code: int, status: str, log: str) -> dict[str, Any]:
    return {"hash": txid.hex() if txid else None, "code": code, "status": status, "log": log}


class NodeApi:
    """The methods, bound to one node."""

    def __init__(self, driver: NodeDriver, hub: Hub, p2p: P2PService | None = None) -> None:
        self.driver = driver
        self.hub = hub
        self.p2p = p2p
        self.methods = self._table()

    # --- reads -------------------------------------------------------------------------

    async def status(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        node = self.driver.node
        chain, genesis = node.chain, node.config.genesis
        key = node.config.validator_key
        return {
            "node_info": {
                "id": node.config.peers.node_id.hex(),
                "network": chain.chain_id.hex(),
                "chain_name": genesis.chain_name,
                "mode": genesis.mode,
                "engine": genesis.consensus.engine,
                "version": __version__,
                "listen_addr": self.p2p.config.listen_address if self.p2p is not None else "",
            },
            "sync_info": {
                "latest_block_height": chain.height,
                "latest_block_hash": chain.tip_hash.hex(),
                "latest_block_time_ms": chain.tip_header.timestamp_ms,
                "finalized_height": chain.finalized_height,
                "catching_up": node.sync.syncing,
            },
            "validator_info": {"public_key": key.public_key.hex() if key is not None else None},
            "peers": len(node.peers),
            "mempool_size": len(node.mempool),
        }

    async def net_info(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        now = self.driver.clock()
        records = self.driver.node.peer_manager.peers.values()
        peers = [
            {
                "id": record.peer,
                "node_id": record.node_id.hex(),
                "address": str(record.address) if record.address is not None else None,
                "listen": str(record.listen) if record.listen is not None else None,
                "direction": "outbound" if record.outbound else "inbound",
                "kind": record.kind.value,
                "connected_seconds": round(now - record.connected_at, 3),
                "ping_ms": None if record.min_ping is None else round(record.min_ping * 1e3, 3),
                "closing": record.closing,
            }
            for record in records
        ]
        listen = self.p2p.config.listen_address if self.p2p is not None else ""
        return {"listen_addr": listen, "n_peers": len(peers), "peers": peers}

    async def block(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        chain = self.driver.node.chain
        if "height" in params and "hash" in params:
            raise RpcError(INVALID_PARAMS, "give height or hash, not both")
        if "hash" in params:
            wanted = _hash_param("hash", params["hash"])
        else:
            height = params.get("height", chain.height)
            found = chain.hash_at(height)
            if found is None:
                raise RpcError(NOT_FOUND, f"no block at height {height}; the tip is {chain.height}")
            wanted = found
        block = chain.block(wanted)
        if block is None:
            raise RpcError(NOT_FOUND, f"no block {wanted.hex()}")
        return self._block_json(block)

    def _block_json(self, block: Block) -> dict[str, Any]:
        node = self.driver.node
        header, this_hash = block.header, block_hash(block)
        main = node.chain.is_main(this_hash)
        result: dict[str, Any] = {
            "hash": this_hash.hex(),
            "height": header.height,
            "main_chain": main,
            "header": {
                "version": header.version,
                "chain_id": header.chain_id.hex(),
                "parent": header.parent.hex(),
                "time_ms": header.timestamp_ms,
                "tx_root": header.tx_root.hex(),
                "state_root": header.state_root.hex(),
                "beneficiary": encode_address(header.beneficiary),
                "consensus": header.consensus.hex(),
            },
            "tx_count": len(block.transactions),
            "txs": [txid_of(tx).hex() for tx in block.transactions],
        }
        engine = node.engine
        if isinstance(engine, BftEngine) and header.height > 0:
            seal = engine.seal_of(header)
            result["last_commit"] = commit_json(seal.last_commit)
            result["evidence"] = len(seal.evidence)
            bft = node.bft
            result["commit"] = commit_json(bft.commit_for(header.height)) if bft and main else None
        return result

    async def tx(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        node = self.driver.node
        txid = _hash_param("hash", params["hash"])
        pending = node.mempool.get(txid)
        if pending is not None:
            return {**tx_json(pending.tx, txid), "status": "pending"}
        try:
            location = node.chain.store.find_tx(txid)
        except StoreError as error:
            raise RpcError(
                UNAVAILABLE,
                "this node keeps no transaction index ([storage] tx_index = false), so only"
                f" pending transactions can be looked up ({error})",
            ) from None
        block = None if location is None else node.chain.block(location.block_hash)
        if location is None or block is None:
            raise RpcError(NOT_FOUND, f"no transaction {txid.hex()} in the chain or the mempool")
        return {
            **tx_json(block.transactions[location.position], txid),
            "status": "committed",
            "height": location.height,
            "block_hash": location.block_hash.hex(),
            "index": location.position,
            "confirmations": node.chain.height - location.height + 1,
        }

    async def account(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        node = self.driver.node
        try:
            address = decode_address(params["address"])
        except CryptoError as error:
            raise RpcError(INVALID_PARAMS, f"param address: {error}") from None
        ledger = node.chain.ledger
        return {
            "address": encode_address(address),
            "balance": ledger.account_balance(address),
            "nonce": ledger.account_nonce(address),
            "next_nonce": node.next_nonce(address),
            "pending": len(node.mempool.pending_for(address)),
        }

    async def mempool(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        pool = self.driver.node.mempool
        limit = params.get("limit", MEMPOOL_TXIDS_DEFAULT)
        txids = [vtx.txid.hex() for vtx in itertools.islice(pool, limit)]
        return {"size": len(pool), "bytes": pool.bytes_used, "txids": txids}

    async def bans(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        entries = self.driver.node.peer_manager.bans.entries(self.driver.clock())
        return {
            "bans": [
                {"ip": e.ip, "until": e.until, "reason": e.reason, "kind": e.kind.name.lower()}
                for e in entries
            ]
        }

    async def discover(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        return self.openrpc()

    def openrpc(self) -> dict[str, Any]:
        return openrpc_document(self.methods, "meshchain node API", __version__)

    # --- writes ------------------------------------------------------------------------

    def _submit(self, text: str) -> tuple[bytes, dict[str, Any]]:
        if self.driver.stopped:
            raise RpcError(UNAVAILABLE, "the node is shutting down")
        raw = decode_raw_tx(text)
        node = self.driver.node
        try:
            txid = txid_of(TX_CODEC.decode(raw))
            known = txid in node.mempool or txid in node.gossip.stempool
        except DecodeError:
            known = False
        actions = self.driver.feed(TransactionSubmitted(raw))
        return raw, check_result(raw, actions, known)

    async def broadcast_tx_sync(
        self, context: CallContext, params: dict[str, Any]
    ) -> dict[str, Any]:
        return self._submit(params["tx"])[1]

    async def broadcast_tx_commit(
        self, context: CallContext, params: dict[str, Any]
    ) -> dict[str, Any]:
        raw = decode_raw_tx(params["tx"])
        try:
            txid = txid_of(TX_CODEC.decode(raw))
        except DecodeError:
            return {"check_tx": self._submit(params["tx"])[1], "committed": False}
        try:
            waiting = self.hub.await_block(txid)  # before feeding: no block is missed
        except ValueError as error:
            raise RpcError(LIMIT_REACHED, str(error)) from None
        try:
            _, check = self._submit(params["tx"])
            if check["code"] != 0:
                return {"check_tx": check, "committed": False}
            try:
                where = await asyncio.wait_for(asyncio.shield(waiting), BROADCAST_COMMIT_TIMEOUT)
            except TimeoutError:
                raise RpcError(
                    TIMEOUT,
                    f"transaction {txid.hex()} was accepted but is in no block after"
                    f" {BROADCAST_COMMIT_TIMEOUT:g} s; look it up later with tx",
                    {"check_tx": check},
                ) from None
            return {"check_tx": check, "committed": True, **where}
        finally:
            self.hub.forget(txid, waiting)
            waiting.cancel()

    async def unban(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        try:
            ip = ipaddress.ip_address(params["ip"]).packed
        except ValueError as error:
            raise RpcError(INVALID_PARAMS, f"param ip: {error}") from None
        removed = self.driver.node.peer_manager.bans.unban(ip)
        return {"ip": params["ip"], "removed": removed}

    # --- subscriptions (WebSocket) ------------------------------------------------------

    async def subscribe(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        try:
            subscription = self.hub.subscribe(context.client, params["event"])
        except ValueError as error:
            raise RpcError(LIMIT_REACHED, str(error)) from None
        return {"subscription": subscription, "event": params["event"]}

    async def unsubscribe(self, context: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        if not self.hub.unsubscribe(context.client, params["subscription"]):
            raise RpcError(NOT_FOUND, f"no subscription {params['subscription'][:80]!r} here")
        return {"unsubscribed": params["subscription"]}

    # --- the table ---------------------------------------------------------------------

    def _table(self) -> list[Method]:
        tx_param = Param(
            "tx",
            {"type": "string", "minLength": 1, "maxLength": MAX_TX_TEXT},
            "the signed transaction's canonical encoding, as hex or base64",
        )
        obj = {"type": "object"}
        return [
            Method("status", self.status, "Node identity, chain and sync state"),
            Method("net_info", self.net_info, "Connected peers: id, address, kind, ping"),
            Method(
                "block",
                self.block,
                "A block by height (default: the tip) or hash: header, tx ids, BFT commits",
                (
                    Param("height", {"type": "integer", "minimum": 0}, "height", required=False),
                    Param("hash", HASH_SCHEMA, "block hash, hex", required=False),
                ),
            ),
            Method(
                "tx",
                self.tx,
                "A transaction by hash: pending (mempool) or committed (tx index)",
                (Param("hash", HASH_SCHEMA, "transaction id, hex"),),
            ),
            Method(
                "account",
                self.account,
                "Balance, confirmed nonce and next nonce of an address",
                (Param("address", {"type": "string", "maxLength": 128}, "mc1... address"),),
            ),
            Method(
                "mempool",
                self.mempool,
                "Mempool size, bytes and some transaction ids",
                (
                    Param(
                        "limit",
                        {"type": "integer", "minimum": 0, "maximum": MAX_MEMPOOL_TXIDS},
                        f"how many ids to list (default {MEMPOOL_TXIDS_DEFAULT})",
                        required=False,
                    ),
                ),
            ),
            Method("bans", self.bans, "Banned and discouraged IPs with expiry and reason"),
            Method(
                "broadcast_tx_sync",
                self.broadcast_tx_sync,
                "Submit a transaction; the node's accept or reject answer",
                (tx_param,),
                obj,
                write=True,
            ),
            Method(
                "broadcast_tx_commit",
                self.broadcast_tx_commit,
                f"Submit a transaction, wait (up to {BROADCAST_COMMIT_TIMEOUT:g} s) for its block",
                (tx_param,),
                obj,
                write=True,
                timeout=BROADCAST_COMMIT_TIMEOUT + REQUEST_TIMEOUT,
            ),
            Method(
                "unban",
                self.unban,
                "Remove an IP from the ban list",
                (Param("ip", {"type": "string", "maxLength": 64}, "IPv4 or IPv6 address"),),
                obj,
                write=True,
            ),
            Method(
                "subscribe",
                self.subscribe,
                "Push notifications for an event (WebSocket only)",
                (Param("event", {"type": "string", "enum": list(EVENTS)}, "what to follow"),),
                websocket_only=True,
            ),
            Method(
                "unsubscribe",
                self.unsubscribe,
                "Stop a subscription (WebSocket only)",
                (Param("subscription", {"type": "string", "maxLength": 64}, "its id"),),
                websocket_only=True,
            ),
            Method("rpc.discover", self.discover, "This API as an OpenRPC document"),
        ]

"""From the node's actions to API clients: WebSocket subscriptions and the wait of
`broadcast_tx_commit` for its block.

The hub's observers run inside `NodeDriver.feed`. They only put text into bounded
queues and resolve futures, never wait, so API clients cost the node a few dictionary
lookups per action; a client whose queue is full is dropped, as CometBFT drops a slow
subscriber, and everyone else goes on being served.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

from meshchain.api.rpc import encode
from meshchain.core.chain.tx import txid_of
from meshchain.core.crypto.address import encode_address
from meshchain.core.events import (
    Action,
    BlockAccepted,
    Input,
    PeerConnected,
    PeerDisconnected,
    TransactionAccepted,
)
from meshchain.runtime.driver import NodeDriver

log = logging.getLogger("meshchain.api")

NEW_BLOCK, NEW_TX, PEER = "new_block", "new_tx", "peer"
EVENTS = (NEW_BLOCK, NEW_TX, PEER)
MAX_WS_CLIENTS = 100  # CometBFT's default max_subscription_clients
MAX_SUBSCRIPTIONS_PER_CLIENT = 5  # CometBFT's default max_subscriptions_per_client
# Messages waiting for one client: CometBFT's default subscription buffer is 200.
WS_QUEUE_SIZE = 200
# Ours: `broadcast_tx_commit` calls waiting at once; each holds a future and an HTTP
# connection for up to BROADCAST_COMMIT_TIMEOUT, so they are bounded like clients.
MAX_COMMIT_WAITERS = 1_000


class WsClient:
    """One WebSocket connection: its outgoing queue and its subscriptions."""

    def __init__(self, queue_size: int, abort: Callable[[], None]) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.subscriptions: dict[str, str] = {}  # subscription id -> event
        self.dropped = False
        self.abort = abort  # closes the connection at once, without a goodbye

    def push(self, text: str) -> bool:
        """Queue a message; False when the queue is full (the client is too slow)."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True


class Hub:
    """WebSocket clients and their subscriptions, and transactions awaited in blocks."""

    def __init__(
        self,
        driver: NodeDriver,
        max_clients: int = MAX_WS_CLIENTS,
        max_subscriptions: int = MAX_SUBSCRIPTIONS_PER_CLIENT,
    ) -> None:
        self.driver = driver
        self.max_clients = max_clients
        self.max_subscriptions = max_subscriptions
        self.clients: set[WsClient] = set()
        self.subscribers: dict[str, dict[WsClient, str]] = {event: {} for event in EVENTS}
        self.waiters: dict[bytes, list[asyncio.Future[dict[str, Any]]]] = {}
        self.dropped = 0  # clients dropped for being slow
        self._ids = itertools.count(1)
        self._announced: set[str] = set()  # peers reported connected
        driver.observers.append(self._on_action)
        driver.input_observers.append(self._on_input)

    def detach(self) -> None:
        self.driver.observers.remove(self._on_action)
        self.driver.input_observers.remove(self._on_input)
        for futures in self.waiters.values():
            for future in futures:
                future.cancel()
        self.waiters.clear()

    # --- clients and subscriptions ---------------------------------------------------

    def add(self, client: WsClient) -> None:
        self.clients.add(client)

    def remove(self, client: WsClient) -> None:
        self.clients.discard(client)
        for subscribers in self.subscribers.values():
            subscribers.pop(client, None)
        client.subscriptions.clear()

    def drop(self, client: WsClient) -> None:
        """Close a client that does not keep up; nothing it was owed is sent."""
        if client.dropped:
            return
        client.dropped = True
        self.dropped += 1
        log.info("dropped a WebSocket client: %d messages waiting", client.queue.qsize())
        self.remove(client)
        client.abort()

    def subscribe(self, client: WsClient, event: str) -> str:
        """A new subscription's id; ValueError past the per-client limit."""
        if len(client.subscriptions) >= self.max_subscriptions:
            raise ValueError(f"at most {self.max_subscriptions} subscriptions per connection")
        subscription = f"{event}-{next(self._ids)}"
        client.subscriptions[subscription] = event
        self.subscribers[event][client] = subscription
        return subscription

    def unsubscribe(self, client: WsClient, subscription: str) -> bool:
        event = client.subscriptions.pop(subscription, None)
        if event is None:
            return False
        self.subscribers[event].pop(client, None)
        # Another subscription of the same client to the same event takes over.
        for other, other_event in client.subscriptions.items():
            if other_event == event:
                self.subscribers[event][client] = other
        return True

    def publish(self, event: str, result: Any) -> None:
        """Push a notification to the event's subscribers (the result encoded once)."""
        subscribers = self.subscribers[event]
        if not subscribers:
            return
        body = encode(result)
        for client, subscription in list(subscribers.items()):
            text = (
                '{"jsonrpc":"2.0","method":"subscription","params":{"subscription":'
                f'"{subscription}","event":"{event}","result":{body}}}}}'
            )
            if not client.push(text):
                self.drop(client)

    # --- broadcast_tx_commit ------------------------------------------------------------

    def await_block(self, txid: bytes) -> asyncio.Future[dict[str, Any]]:
        """A future resolved with where the transaction lands; `forget` it when done."""
        if sum(map(len, self.waiters.values())) >= MAX_COMMIT_WAITERS:
            raise ValueError(f"{MAX_COMMIT_WAITERS} broadcast_tx_commit calls wait already")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(txid, []).append(future)
        return future

    def forget(self, txid: bytes, future: asyncio.Future[dict[str, Any]]) -> None:
        futures = self.waiters.get(txid, [])
        if future in futures:
            futures.remove(future)
        if not futures:
            self.waiters.pop(txid, None)

    # --- observers (inside NodeDriver.feed: never raise, never wait) -------------------

    def _on_action(self, action: Action) -> None:
        kind = type(action)
        if kind is not BlockAccepted and kind is not TransactionAccepted:
            return
        try:
            if isinstance(action, BlockAccepted):
                self._block(action)
            elif isinstance(action, TransactionAccepted) and self.subscribers[NEW_TX]:
                self.publish(NEW_TX, self._tx(action.txid))
        except Exception:  # an API bug must not stop the node
            log.exception("API observer failed on %s", kind.__name__)

    def _on_input(self, event: Input) -> None:
        kind = type(event)
        if kind is not PeerConnected and kind is not PeerDisconnected:
            return  # the common case (a message received) in two identity tests
        try:
            if isinstance(event, PeerConnected | PeerDisconnected):
                self._peer(event)
        except Exception:
            log.exception("API observer failed on %s", kind.__name__)

    def _block(self, accepted: BlockAccepted) -> None:
        chain = self.driver.node.chain
        if self.subscribers[NEW_BLOCK]:
            header = chain.header(accepted.block_hash)
            self.publish(
                NEW_BLOCK,
                {
                    "height": accepted.height,
                    "hash": accepted.block_hash.hex(),
                    "tx_count": accepted.tx_count,
                    "produced": accepted.produced,
                    "time_ms": header.timestamp_ms if header is not None else None,
                },
            )
        if not self.waiters or not accepted.tx_count:
            return
        block = chain.block(accepted.block_hash)
        for index, tx in enumerate(block.transactions if block is not None else []):
            for future in self.waiters.get(txid_of(tx), []):
                if not future.done():
                    where = {"height": accepted.height, "block_hash": accepted.block_hash.hex()}
                    future.set_result({**where, "index": index})

    def _tx(self, txid: bytes) -> dict[str, Any]:
        vtx = self.driver.node.mempool.get(txid)
        if vtx is None:
            return {"hash": txid.hex()}
        body = vtx.tx.body
        return {
            "hash": txid.hex(),
            "sender": encode_address(vtx.sender),
            "recipient": encode_address(body.recipient),
            "amount": body.amount,
            "fee": body.fee,
            "nonce": body.nonce,
        }

    def _peer(self, event: PeerConnected | PeerDisconnected) -> None:
        if isinstance(event, PeerConnected):
            if event.peer not in self.driver.node.peers:
                return  # refused by the node (a slot limit, a ban): never was a peer
            self._announced.add(event.peer)
            result = {
                "id": event.peer,
                "change": "connected",
                "direction": "outbound" if event.outbound else "inbound",
                "kind": event.connection_kind.value,
                "address": str(event.address) if event.address is not None else None,
            }
        else:
            if event.peer not in self._announced:
                return
            self._announced.discard(event.peer)
            result = {"id": event.peer, "change": "disconnected", "reason": event.reason}
        self.publish(PEER, result)

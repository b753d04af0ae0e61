"""A small client for the node's JSON-RPC API, shared by the devnet's traffic and the wallet.

One call is one HTTP POST through an `aiohttp.ClientSession` the caller owns (so the
devnet reuses one session for every node). Every failure is a `NodeApiError`: the
node's own error answer with its code, `NodeUnreachableError` when nothing answers, or
an answer that is not JSON-RPC.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import aiohttp

from meshchain.core.chain.tx import TxBody, sign_transaction
from meshchain.core.crypto.address import encode_address
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.wire.codec import encode
from meshchain.errors import NodeApiError, NodeUnreachableError

RPC_TIMEOUT_S = 5.0  # a busy node on a shared core can be slow, but not this slow
# broadcast_tx_commit: the node waits up to 10 s for a block and answers within 25 s
# (its method timeout); a little more here, so the node's own answer arrives first.
COMMIT_TIMEOUT_S = 30.0
# Ours: the largest answer (a block with its ids, an OpenRPC document) is far smaller.
MAX_ANSWER_BYTES = 8 * 1024 * 1024


async def rpc(
    session: aiohttp.ClientSession,
    url: str,
    method: str,
    params: Any = None,
    *,
    token: str = "",
    timeout: float = RPC_TIMEOUT_S,
) -> Any:
    """One JSON-RPC call to the node at `url`; its result, or NodeApiError."""
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        request["params"] = params
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.post(
            url, json=request, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise NodeApiError(f"{method} at {url}: answer over {MAX_ANSWER_BYTES} bytes")
    except aiohttp.ClientConnectorError as error:
        cause = error.os_error
        reason = os.strerror(cause.errno) if cause.errno else str(cause)  # "Connection refused"
        raise NodeUnreachableError(f"cannot reach the node at {url}: {reason}") from None
    except TimeoutError:
        raise NodeUnreachableError(
            f"no answer from the node at {url} within {timeout:g} s ({method})"
        ) from None
    except aiohttp.ClientConnectionError as error:
        raise NodeUnreachableError(f"lost the connection to the node at {url}: {error}") from None
    except (aiohttp.ClientError, ValueError) as error:
        raise NodeApiError(f"{method} at {url}: {error}") from None
    return _result(method, url, bytes(body))


def _result(method: str, url: str, body: bytes) -> Any:
    try:
        answer = json.loads(body)
    except ValueError:
        raise NodeApiError(f"{method} at {url}: the answer is not JSON; is it a node?") from None
    if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
        raise NodeApiError(f"{method} at {url}: not a JSON-RPC answer")
    if "error" in answer:
        error = answer["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        raise NodeApiError(f"{method}: {message}", code if isinstance(code, int) else None)
    return answer["result"]


@dataclass(frozen=True)
class Account:
    """What the node's `account` method says about an address."""

    balance: int
    nonce: int  # confirmed
    next_nonce: int  # for the next transaction, after those pending at this node
    pending: int


async def account(session: aiohttp.ClientSession, url: str, address: bytes) -> Account:
    answer = await rpc(session, url, "account", {"address": encode_address(address)})
    try:
        return Account(
            int(answer["balance"]),
            int(answer["nonce"]),
            int(answer["next_nonce"]),
            int(answer["pending"]),
        )
    except (KeyError, TypeError, ValueError):
        raise NodeApiError(f"account at {url}: unexpected answer {str(answer)[:200]}") from None


async def chain_id(session: aiohttp.ClientSession, url: str) -> bytes:
    """The chain id the node serves (from `status`), which every transaction signs."""
    status = await rpc(session, url, "status")
    try:
        return bytes.fromhex(status["node_info"]["network"])
    except (KeyError, TypeError, ValueError):
        raise NodeApiError(f"status at {url}: no chain id in the answer") from None


def signed_transfer(
    key: SecretKey, chain: bytes, recipient: bytes, amount: int, fee: int, nonce: int
) -> str:
    """A transfer signed by `key`, as the hex the broadcast methods take."""
    body = TxBody(
        chain_id=chain,
        sender=key.public_key,
        recipient=recipient,
        amount=amount,
        fee=fee,
        nonce=nonce,
    )
    return encode(sign_transaction(body, key)).hex()

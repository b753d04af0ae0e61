"""Sending coins from a wallet key through a node's API.

`prepare` asks the node what the transfer needs (chain id, balance, next nonce) before
any passphrase is typed, so an empty account fails fast; `submit` broadcasts the signed
transfer and turns the node's answer into a `Sent` or a typed error. The devnet's
traffic generator builds and signs with the same `meshchain.api.client` helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from meshchain.api.client import (
    COMMIT_TIMEOUT_S,
    RPC_TIMEOUT_S,
    Account,
    account,
    chain_id,
    rpc,
)
from meshchain.api.rpc import UNAUTHORIZED
from meshchain.config import DEFAULT_API_PORT
from meshchain.core.crypto.address import encode_address
from meshchain.errors import (
    InsufficientFundsError,
    NodeApiError,
    TransferRejectedError,
    WalletError,
)
from meshchain.wallet.amounts import format_amount

DEFAULT_NODE_URL = f"http://127.0.0.1:{DEFAULT_API_PORT}"  # a node's default [api] listen
# The node's reject reason for a balance that does not cover amount + fee
# (RejectCode.INSUFFICIENT_FUNDS, lower case, as `broadcast_tx_sync` reports it).
INSUFFICIENT_FUNDS_REASON = "insufficient_funds"
TAKEN_STATUSES = ("accepted", "stemmed", "known")  # the node has the transaction


def node_url(text: str) -> str:
    """`--node` as a URL: HOST:PORT gets http:// in front."""
    return text if "://" in text else f"http://{text}"


@dataclass(frozen=True)
class Plan:
    """What the node says a transfer from `sender` needs."""

    chain: bytes
    sender: Account


@dataclass(frozen=True)
class Sent:
    """A transfer the node took: its id, status, and the block when waited for."""

    txid: str
    status: str
    height: int | None = None
    block_hash: str | None = None


async def balance(url: str, address: bytes) -> Account:
    """The address's account as the node at `url` sees it."""
    async with aiohttp.ClientSession() as session:
        return await account(session, url, address)


async def prepare(url: str, sender: bytes, amount: int, fee: int) -> Plan:
    """The chain id and the sender's account; InsufficientFundsError when the confirmed
    balance cannot cover amount + fee (the node checks pending spends too)."""
    async with aiohttp.ClientSession() as session:
        chain = await chain_id(session, url)
        state = await account(session, url, sender)
    if state.balance < amount + fee:
        raise InsufficientFundsError(
            f"insufficient funds: {encode_address(sender)} holds {format_amount(state.balance)}"
            f" coins, the transfer needs {format_amount(amount + fee)}"
            f" ({format_amount(amount)} + fee {format_amount(fee)})",
            INSUFFICIENT_FUNDS_REASON,
        )
    return Plan(chain, state)


async def submit(url: str, raw: str, *, wait: bool, token: str) -> Sent:
    """Broadcast `raw`; with `wait`, until it is in a block (broadcast_tx_commit)."""
    method = "broadcast_tx_commit" if wait else "broadcast_tx_sync"
    timeout = COMMIT_TIMEOUT_S if wait else RPC_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        try:
            answer = await rpc(session, url, method, {"tx": raw}, token=token, timeout=timeout)
        except NodeApiError as error:
            if error.code == UNAUTHORIZED:
                raise NodeApiError(
                    f"the node at {url} wants its API token for broadcasts: pass --token",
                    error.code,
                ) from None
            raise
    return read_answer(answer, wait=wait)


def read_answer(answer: Any, *, wait: bool) -> Sent:
    """The node's answer to a broadcast as a `Sent`, or the typed error it means."""
    try:
        check = answer["check_tx"] if wait else answer
        status, txid = str(check["status"]), str(check["hash"])
        if status == "rejected":
            reason, log = str(check.get("reason", "")), str(check.get("log", ""))
            detail = f"{reason}: {log}" if log else reason
            if reason == INSUFFICIENT_FUNDS_REASON:
                raise InsufficientFundsError(
                    f"insufficient funds: the node refused the transfer ({detail})", reason
                )
            raise TransferRejectedError(f"the node refused the transfer: {detail}", reason)
        if status not in TAKEN_STATUSES:
            raise TransferRejectedError(f"the node did not take the transfer ({status})", status)
        if not wait:
            return Sent(txid, status)
        if not answer["committed"]:
            raise WalletError(f"transaction {txid} is in no block yet; look it up later")
        return Sent(txid, status, int(answer["height"]), str(answer["block_hash"]))
    except (KeyError, TypeError, ValueError):
        raise NodeApiError(f"unexpected answer to a broadcast: {str(answer)[:200]}") from None

"""The node's answers to a broadcast, as the wallet reads them: built by the node's own
`check_result`, so the two cannot drift apart."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from meshchain.api.client import signed_transfer
from meshchain.api.methods import check_result
from meshchain.core.chain.tx import TX_CODEC, txid_of
from meshchain.core.crypto.keys import SecretKey
from meshchain.core.events import Action, TransactionAccepted, TransactionRejected
from meshchain.errors import (
    InsufficientFundsError,
    NodeApiError,
    RejectCode,
    TransferRejectedError,
    WalletError,
)
from meshchain.wallet.transfer import node_url, read_answer


def _raw() -> tuple[bytes, bytes]:
    key = SecretKey.generate(random.Random(5))
    raw = bytes.fromhex(signed_transfer(key, bytes(32), bytes(20), 1, 1_000, 0))
    return raw, txid_of(TX_CODEC.decode(raw))


def _check(actions_for: Callable[[bytes], list[Action]]) -> dict[str, Any]:
    """The node's broadcast_tx_sync answer when it returned these actions."""
    raw, txid = _raw()
    return check_result(raw, actions_for(txid), known=False)


def test_an_accepted_transfer_reads_as_sent() -> None:
    check = _check(lambda txid: [TransactionAccepted(txid)])
    sent = read_answer(check, wait=False)
    assert (sent.txid, sent.status, sent.height) == (_raw()[1].hex(), "accepted", None)
    waited = {"check_tx": check, "committed": True, "height": 7, "block_hash": "ab", "index": 0}
    assert read_answer(waited, wait=True).height == 7


def test_the_nodes_insufficient_funds_reject_is_the_same_error_as_the_wallets() -> None:
    check = _check(
        lambda txid: [TransactionRejected(txid, RejectCode.INSUFFICIENT_FUNDS, "has 3", None)]
    )
    for answer, wait in ((check, False), ({"check_tx": check, "committed": False}, True)):
        with pytest.raises(InsufficientFundsError, match=r"^insufficient funds: .*has 3") as e:
            read_answer(answer, wait=wait)
        assert e.value.reason == "insufficient_funds"


def test_other_rejects_carry_the_nodes_reason() -> None:
    check = _check(lambda txid: [TransactionRejected(txid, RejectCode.BAD_NONCE, "", None)])
    with pytest.raises(TransferRejectedError, match="refused the transfer: bad_nonce") as e:
        read_answer(check, wait=False)
    assert not isinstance(e.value, InsufficientFundsError)
    ignored = _check(lambda txid: [])
    with pytest.raises(TransferRejectedError, match=r"did not take the transfer \(ignored\)"):
        read_answer(ignored, wait=False)


def test_accepted_but_not_committed_and_nonsense_answers_are_errors() -> None:
    check = _check(lambda txid: [TransactionAccepted(txid)])
    with pytest.raises(WalletError, match="in no block yet"):
        read_answer({"check_tx": check, "committed": False}, wait=True)
    nonsense: list[Any] = [None, [], {"status": "accepted"}, {"check_tx": 3}]
    for answer in nonsense:
        with pytest.raises(NodeApiError, match="unexpected answer"):
            read_answer(answer, wait=True)


def test_a_node_given_as_host_and_port_gets_http() -> None:
    assert node_url("127.0.0.1:26657") == "http://127.0.0.1:26657"
    assert node_url("https://node.example/rpc") == "https://node.example/rpc"

from __future__ import annotations

import pytest

from meshchain.chainkit import ChainKit
from meshchain.core.chain.genesis import chain_id, genesis_ledger
from meshchain.core.chain.ledger import MAX_MONEY, BlockEconomics, Ledger, account_leaf
from meshchain.core.chain.tx import VerifiedTx, verify_transaction
from meshchain.core.crypto.keys import SignatureVerifier
from meshchain.core.crypto.merkle import verify_proof
from meshchain.errors import RejectCode, ValidationError

KIT = ChainKit(seed=11, accounts=3)
CHAIN_ID = chain_id(KIT.genesis)
PAYEE = bytes(range(20))
ECONOMICS = BlockEconomics(PAYEE, 100, 5_000)


def vtx(sender: int, recipient: int | bytes, amount: int, fee: int, nonce: int) -> VerifiedTx:
    tx = KIT.transfer(CHAIN_ID, sender, recipient, amount, fee, nonce)
    return verify_transaction(tx, SignatureVerifier())


def snapshot(ledger: Ledger) -> tuple[bytes, list[object], int, int]:
    return ledger.state_root(), list(ledger.records()), ledger.minted, ledger.burnt


def test_apply_moves_funds_pays_beneficiary_and_burns_half_the_fees() -> None:
    ledger = genesis_ledger(KIT.genesis)
    ledger.apply_block([vtx(0, 1, 1_000, 10, 0), vtx(0, 2, 5, 30, 1)], ECONOMICS)
    funds = KIT.genesis.allocations[0].amount
    assert ledger.account_balance(KIT.address(0)) == funds - 1_045
    assert ledger.account_nonce(KIT.address(0)) == 2
    assert ledger.account_balance(KIT.address(1)) == funds + 1_000
    assert ledger.account_balance(PAYEE) == 100 + 20  # reward + unburnt half of 40
    assert ledger.burnt == 20
    assert ledger.total_balance() == ledger.expected_supply()


def test_undo_restores_exact_state_including_created_accounts() -> None:
    ledger = genesis_ledger(KIT.genesis)
    before = snapshot(ledger)
    undo = ledger.apply_block([vtx(0, bytes(20), 7, 1, 0)], ECONOMICS)
    assert len(ledger) == 5  # the new recipient and the beneficiary were created
    assert ledger.undo_block(undo) == [bytes(20), PAYEE]
    assert snapshot(ledger) == before


@pytest.mark.parametrize(
    ("txs", "code"),
    [
        (lambda: [vtx(0, 1, 1, 1, 1)], RejectCode.BAD_NONCE),
        (lambda: [vtx(0, 1, 1, 1, 0), vtx(0, 1, 1, 1, 0)], RejectCode.BAD_NONCE),
        (
            lambda: [vtx(0, 1, KIT.genesis.allocations[0].amount, 1, 0)],
            RejectCode.INSUFFICIENT_FUNDS,
        ),
        (lambda: [vtx(0, 1, 10, 1, 0), vtx(1, 2, 10, 1, 5)], RejectCode.BAD_NONCE),
    ],
)
def test_a_bad_transaction_leaves_no_trace(txs: object, code: RejectCode) -> None:
    ledger = genesis_ledger(KIT.genesis)
    before = snapshot(ledger)
    with pytest.raises(ValidationError) as caught:
        ledger.apply_block(txs(), ECONOMICS)  # type: ignore[operator]
    assert caught.value.code is code
    assert snapshot(ledger) == before


def test_unknown_sender_is_rejected() -> None:
    ledger = Ledger()
    with pytest.raises(ValidationError) as caught:
        ledger.apply_block([vtx(0, 1, 1, 1, 0)], ECONOMICS)
    assert caught.value.code is RejectCode.BAD_NONCE
    assert len(ledger) == 0


def test_reward_beyond_max_money_is_rejected_and_rolled_back() -> None:
    ledger = genesis_ledger(KIT.genesis)
    before = snapshot(ledger)
    with pytest.raises(ValidationError) as caught:
        ledger.apply_block([], BlockEconomics(PAYEE, MAX_MONEY + 1, 0))
    assert caught.value.code is RejectCode.OVERFLOW
    assert snapshot(ledger) == before


def test_every_account_change_changes_the_state_root() -> None:
    ledger = genesis_ledger(KIT.genesis)
    roots = {ledger.state_root()}
    for nonce in range(3):
        ledger.apply_block([vtx(0, 1, 1, 0, nonce)], BlockEconomics(PAYEE, 0, 0))
        roots.add(ledger.state_root())
    assert len(roots) == 4
    # A leaf commits to each field separately.
    leaves = {account_leaf(PAYEE, 1, 0), account_leaf(PAYEE, 0, 1), account_leaf(bytes(20), 1, 0)}
    assert len(leaves) == 3


def test_state_root_is_independent_of_when_it_is_computed() -> None:
    eager, lazy = genesis_ledger(KIT.genesis), genesis_ledger(KIT.genesis)
    for nonce in range(4):
        eager.apply_block([vtx(1, 2, 3, 1, nonce)], ECONOMICS)
        eager.state_root()
        lazy.apply_block([vtx(1, 2, 3, 1, nonce)], ECONOMICS)
    assert eager.state_root() == lazy.state_root()
    fresh = Ledger(lazy.allocated)
    fresh.load(lazy.records(), lazy.minted, lazy.burnt)
    assert fresh.state_root() == lazy.state_root()


def test_account_proofs_verify_against_the_state_root() -> None:
    ledger = genesis_ledger(KIT.genesis)
    ledger.apply_block([vtx(0, 1, 3, 1, 0)], ECONOMICS)
    root = ledger.state_root()
    for record in ledger.records():
        proven = ledger.proof(record.address)
        assert proven is not None
        account, proof = proven
        leaf = account_leaf(account.address, account.balance, account.nonce)
        assert verify_proof(leaf, proof, root)
        assert not verify_proof(
            account_leaf(account.address, account.balance + 1, account.nonce), proof, root
        )
    assert ledger.proof(bytes([9]) * 20) is None


def test_load_rejects_records_out_of_order() -> None:
    ledger = genesis_ledger(KIT.genesis)
    records = list(ledger.records())
    with pytest.raises(ValueError, match="out of order"):
        Ledger().load(reversed(records), 0, 0)

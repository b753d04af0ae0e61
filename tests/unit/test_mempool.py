"""Mempool admission, replacement, eviction, selection, expiry and chain events."""

from __future__ import annotations

import ast
import functools
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from meshchain.core.chain import mempool as mempool_module
from meshchain.core.chain.mempool import (
    MAX_NONCE_GAP,
    MAX_PENDING_PER_SENDER,
    AddResult,
    Mempool,
    tx_cost,
)
from meshchain.core.chain.tx import TxBody, VerifiedTx, sign_transaction, verify_transaction
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.errors import RejectCode, ValidationError

RECIPIENT = bytes([0xAA]) * 20
RICH = 10**12
SIZE = 165  # encoded size of make_tx() with 256 <= fee < 65536, amount < 128, no data
_VERIFIER = SignatureVerifier()


@functools.cache
def key(signer: int) -> SecretKey:
    return SecretKey.generate(random.Random(signer))


def addr(signer: int) -> bytes:
    return address_from_public_key(key(signer).public_key)


def make_tx(
    signer: int,
    nonce: int,
    fee: int = 1_000,
    amount: int = 10,
    data: bytes = b"",
    recipient: bytes = RECIPIENT,
) -> VerifiedTx:
    k = key(signer)
    body = TxBody(
        chain_id=bytes(32),
        sender=k.public_key,
        recipient=recipient,
        amount=amount,
        fee=fee,
        nonce=nonce,
        data=data,
    )
    return verify_transaction(sign_transaction(body, k, bytes(32)), _VERIFIER)


class FakeAccounts:
    """An AccountView over two dicts, with the ledger's effect of a block."""

    def __init__(self) -> None:
        self.nonces: dict[bytes, int] = {}
        self.balances: dict[bytes, int] = {}

    def account_nonce(self, address: bytes) -> int:
        return self.nonces.get(address, 0)

    def account_balance(self, address: bytes) -> int:
        return self.balances.get(address, 0)

    def apply(self, vtxs: Sequence[VerifiedTx]) -> None:
        for vtx in vtxs:
            body = vtx.tx.body
            assert body.nonce == self.account_nonce(vtx.sender)
            self.nonces[vtx.sender] = body.nonce + 1
            self.balances[vtx.sender] = self.account_balance(vtx.sender) - tx_cost(vtx)
            self.balances[body.recipient] = self.account_balance(body.recipient) + body.amount

    def revert(self, vtxs: Sequence[VerifiedTx]) -> None:
        for vtx in reversed(vtxs):
            body = vtx.tx.body
            self.nonces[vtx.sender] = body.nonce
            self.balances[vtx.sender] += tx_cost(vtx)
            self.balances[body.recipient] -= body.amount


@pytest.fixture
def accounts() -> FakeAccounts:
    view = FakeAccounts()
    for signer in range(6):
        view.balances[addr(signer)] = RICH
    return view


@pytest.fixture
def pool(accounts: FakeAccounts) -> Mempool:
    return Mempool(accounts)


def reject_code(pool: Mempool, vtx: VerifiedTx, now: float = 0.0) -> RejectCode:
    with pytest.raises(ValidationError) as info:
        pool.add(vtx, now)
    return info.value.code


def txids(pool: Mempool) -> set[bytes]:
    return {vtx.txid for vtx in pool}


def test_make_tx_size_is_what_the_eviction_tests_assume() -> None:
    assert make_tx(0, 0, fee=300).size == make_tx(0, 63, fee=65_000).size == SIZE


# -- admission -------------------------------------------------------------------------


def test_add_then_query(pool: Mempool) -> None:
    tx = make_tx(0, 0)
    assert pool.add(tx, 0.0) is AddResult.ADDED
    assert len(pool) == 1
    assert tx.txid in pool
    assert bytes(32) not in pool
    assert pool.get(tx.txid) == tx
    assert pool.get(bytes(32)) is None
    assert pool.bytes_used == tx.size
    assert pool.pending_for(tx.sender) == [tx]
    assert pool.pending_for(addr(1)) == []


def test_duplicate_is_rejected(pool: Mempool) -> None:
    tx = make_tx(0, 0)
    pool.add(tx, 0.0)
    assert reject_code(pool, tx) is RejectCode.DUPLICATE
    assert len(pool) == 1


def test_nonce_below_account_nonce_is_rejected(pool: Mempool, accounts: FakeAccounts) -> None:
    accounts.nonces[addr(0)] = 5
    assert reject_code(pool, make_tx(0, 4)) is RejectCode.BAD_NONCE
    assert pool.add(make_tx(0, 5), 0.0) is AddResult.ADDED


def test_nonce_too_far_ahead_is_rejected(pool: Mempool, accounts: FakeAccounts) -> None:
    accounts.nonces[addr(0)] = 3
    assert reject_code(pool, make_tx(0, 3 + MAX_NONCE_GAP + 1)) is RejectCode.NONCE_GAP
    assert pool.add(make_tx(0, 3 + MAX_NONCE_GAP), 0.0) is AddResult.ADDED


def test_fee_rate_below_minimum_is_rejected(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, min_fee_rate=2.0)
    assert reject_code(pool, make_tx(0, 0, fee=2 * SIZE - 1)) is RejectCode.FEE_TOO_LOW
    assert pool.add(make_tx(0, 0, fee=2 * SIZE), 0.0) is AddResult.ADDED


def test_zero_minimum_fee_rate_admits_free_transactions(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, min_fee_rate=0.0)
    assert pool.add(make_tx(0, 0, fee=0), 0.0) is AddResult.ADDED
    assert reject_code(Mempool(accounts), make_tx(0, 0, fee=0)) is RejectCode.FEE_TOO_LOW


def test_constructor_rejects_nonsense_limits(accounts: FakeAccounts) -> None:
    with pytest.raises(ValueError, match="positive"):
        Mempool(accounts, max_bytes=0)
    with pytest.raises(ValueError, match="positive"):
        Mempool(accounts, expiry_seconds=0)


# -- replace-by-fee --------------------------------------------------------------------


def test_replacement_with_enough_bump_replaces(pool: Mempool) -> None:
    old, new = make_tx(0, 0, fee=1_000), make_tx(0, 0, fee=1_100, amount=20)
    pool.add(old, 0.0)
    assert pool.add(new, 1.0) is AddResult.REPLACED
    assert old.txid not in pool
    assert new.txid in pool
    assert len(pool) == 1
    assert pool.bytes_used == new.size
    assert pool.pending_for(new.sender) == [new]


def test_replacement_with_too_small_bump_is_rejected(pool: Mempool) -> None:
    old = make_tx(0, 0, fee=1_000)
    pool.add(old, 0.0)
    assert reject_code(pool, make_tx(0, 0, fee=1_099)) is RejectCode.FEE_TOO_LOW
    assert txids(pool) == {old.txid}


def test_replacement_needs_a_higher_fee_rate_too(pool: Mempool) -> None:
    old = make_tx(0, 0, fee=1_000)
    bigger = make_tx(0, 0, fee=1_500, data=bytes(200))  # +50% fee, but over twice the size
    assert bigger.fee_rate < old.fee_rate
    pool.add(old, 0.0)
    assert reject_code(pool, bigger) is RejectCode.FEE_TOO_LOW
    assert txids(pool) == {old.txid}


def test_replacement_at_an_equal_fee_rate_is_rejected(pool: Mempool) -> None:
    old = make_tx(0, 0, fee=1_000)
    double = make_tx(0, 0, fee=2_000, data=bytes(SIZE))  # twice the fee at twice the size
    assert double.size == 2 * old.size
    pool.add(old, 0.0)
    assert reject_code(pool, double) is RejectCode.FEE_TOO_LOW
    assert txids(pool) == {old.txid}


def test_sender_limit_blocks_new_nonces_but_not_replacements(pool: Mempool) -> None:
    for nonce in range(MAX_PENDING_PER_SENDER):
        pool.add(make_tx(0, nonce), 0.0)
    assert reject_code(pool, make_tx(0, MAX_PENDING_PER_SENDER)) is RejectCode.TOO_MANY_PENDING
    assert pool.add(make_tx(0, 10, fee=2_000), 0.0) is AddResult.REPLACED
    assert pool.add(make_tx(1, 0), 0.0) is AddResult.ADDED  # other senders are unaffected


# -- affordability ---------------------------------------------------------------------


def test_single_unaffordable_transaction_is_rejected(pool: Mempool, accounts: FakeAccounts) -> None:
    accounts.balances[addr(0)] = 1_009
    assert reject_code(pool, make_tx(0, 0, fee=1_000, amount=10)) is RejectCode.INSUFFICIENT_FUNDS
    accounts.balances[addr(0)] = 1_010
    assert pool.add(make_tx(0, 0, fee=1_000, amount=10), 0.0) is AddResult.ADDED


def test_cumulative_cost_must_be_affordable(pool: Mempool, accounts: FakeAccounts) -> None:
    accounts.balances[addr(0)] = 3 * 1_010 - 1
    pool.add(make_tx(0, 0), 0.0)
    pool.add(make_tx(0, 1), 0.0)
    assert reject_code(pool, make_tx(0, 2)) is RejectCode.INSUFFICIENT_FUNDS
    accounts.balances[addr(0)] = 3 * 1_010
    assert pool.add(make_tx(0, 2), 0.0) is AddResult.ADDED


def test_filling_a_gap_counts_the_later_nonces(pool: Mempool, accounts: FakeAccounts) -> None:
    accounts.balances[addr(0)] = 2 * 1_010
    pool.add(make_tx(0, 0), 0.0)
    pool.add(make_tx(0, 2), 0.0)
    assert reject_code(pool, make_tx(0, 1)) is RejectCode.INSUFFICIENT_FUNDS


def test_costlier_replacement_must_stay_affordable(pool: Mempool, accounts: FakeAccounts) -> None:
    accounts.balances[addr(0)] = 2 * 1_010 + 100
    old = make_tx(0, 0)
    pool.add(old, 0.0)
    pool.add(make_tx(0, 1), 0.0)
    assert reject_code(pool, make_tx(0, 0, fee=1_100, amount=100)) is RejectCode.INSUFFICIENT_FUNDS
    assert old.txid in pool
    assert pool.add(make_tx(0, 0, fee=1_100, amount=10), 0.0) is AddResult.REPLACED


# -- select ----------------------------------------------------------------------------


def test_select_orders_by_fee_rate_across_senders(pool: Mempool) -> None:
    low, high, mid = make_tx(0, 0, fee=500), make_tx(1, 0, fee=2_000), make_tx(2, 0, fee=1_000)
    for tx in (low, high, mid):
        pool.add(tx, 0.0)
    assert pool.select(10**6, 10) == [high, mid, low]


def test_select_keeps_each_senders_nonce_order(pool: Mempool) -> None:
    first, rich_second = make_tx(0, 0, fee=500), make_tx(0, 1, fee=5_000)
    other = make_tx(1, 0, fee=1_000)
    for tx in (rich_second, first, other):
        pool.add(tx, 0.0)
    assert pool.select(10**6, 10) == [other, first, rich_second]


def test_select_starts_at_account_nonce_and_stops_at_a_gap(
    pool: Mempool, accounts: FakeAccounts
) -> None:
    accounts.nonces[addr(0)] = 2
    n2, n3, n5 = make_tx(0, 2), make_tx(0, 3), make_tx(0, 5)
    future = make_tx(1, 1)  # sender 1's account nonce is 0: not ready
    for tx in (n5, n3, n2, future):
        pool.add(tx, 0.0)
    assert pool.select(10**6, 10) == [n2, n3]


def test_select_respects_max_count(pool: Mempool) -> None:
    txs = [make_tx(signer, 0, fee=1_000 + 100 * signer) for signer in range(5)]
    for tx in txs:
        pool.add(tx, 0.0)
    assert pool.select(10**6, 2) == [txs[4], txs[3]]
    assert pool.select(10**6, 0) == []


def test_select_skips_a_sender_whose_next_tx_does_not_fit(pool: Mempool) -> None:
    big = make_tx(0, 0, fee=9_000, data=bytes(200))
    after_big = make_tx(0, 1, fee=9_000)
    small = make_tx(1, 0, fee=1_000)
    for tx in (big, after_big, small):
        pool.add(tx, 0.0)
    assert big.size > 2 * SIZE
    assert pool.select(2 * SIZE, 10) == [small]
    assert pool.select(big.size + 2 * SIZE, 10) == [big, after_big, small]


def test_select_skips_what_the_sender_cannot_afford_in_sequence(
    pool: Mempool, accounts: FakeAccounts
) -> None:
    n0, n1 = make_tx(0, 0, fee=3_000), make_tx(0, 1, fee=3_000)
    other = make_tx(1, 0, fee=1_000)
    for tx in (n0, n1, other):
        pool.add(tx, 0.0)
    accounts.balances[addr(0)] = tx_cost(n0) + tx_cost(n1) - 1  # spent elsewhere meanwhile
    assert pool.select(10**6, 10) == [n0, other]
    accounts.balances[addr(0)] = tx_cost(n0) - 1
    assert pool.select(10**6, 10) == [other]


# -- eviction --------------------------------------------------------------------------


def test_full_pool_evicts_the_lowest_fee_rate(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, max_bytes=3 * SIZE)
    a, cheap, c = make_tx(0, 0, fee=1_000), make_tx(1, 0, fee=500), make_tx(2, 0, fee=2_000)
    for tx in (a, cheap, c):
        pool.add(tx, 0.0)
    newcomer = make_tx(3, 0, fee=1_500)
    assert pool.add(newcomer, 0.0) is AddResult.ADDED
    assert txids(pool) == {a.txid, c.txid, newcomer.txid}
    assert pool.bytes_used == 3 * SIZE


@pytest.mark.parametrize("fee", [400, 500])  # below, and equal to, the cheapest resident
def test_full_pool_rejects_a_cheap_newcomer_unchanged(accounts: FakeAccounts, fee: int) -> None:
    pool = Mempool(accounts, max_bytes=3 * SIZE)
    for tx in (make_tx(0, 0, fee=1_000), make_tx(1, 0, fee=500), make_tx(2, 0, fee=2_000)):
        pool.add(tx, 0.0)
    before = txids(pool)
    assert reject_code(pool, make_tx(3, 0, fee=fee)) is RejectCode.MEMPOOL_FULL
    assert txids(pool) == before
    assert pool.bytes_used == 3 * SIZE
    assert pool.select(10**6, 10)[-1].tx.body.fee == 500  # order and content intact


def test_eviction_takes_a_senders_highest_nonce_first(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, max_bytes=3 * SIZE)
    parent, rich_child = make_tx(0, 0, fee=600), make_tx(0, 1, fee=5_000)
    other = make_tx(1, 0, fee=1_000)
    for tx in (parent, rich_child, other):
        pool.add(tx, 0.0)
    pool.add(make_tx(2, 0, fee=2_000), 0.0)
    # The child pays the most, but it cannot be mined before its cheap parent.
    assert rich_child.txid not in pool
    assert parent.txid in pool
    assert other.txid in pool
    pool.add(make_tx(3, 0, fee=3_000), 0.0)
    assert parent.txid not in pool
    assert other.txid in pool


def test_eviction_takes_unminable_transactions_first(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, max_bytes=3 * SIZE)
    ready, after_gap = make_tx(0, 0, fee=1_000), make_tx(0, 2, fee=9_000)
    cheap = make_tx(1, 0, fee=800)
    for tx in (ready, after_gap, cheap):
        pool.add(tx, 0.0)
    pool.add(make_tx(2, 0, fee=900), 0.0)
    assert after_gap.txid not in pool
    assert {ready.txid, cheap.txid} <= txids(pool)


def test_mempool_full_undoes_earlier_evictions(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, max_bytes=3 * SIZE)
    for tx in (make_tx(0, 0, fee=500), make_tx(1, 0, fee=1_000), make_tx(2, 0, fee=2_000)):
        pool.add(tx, 0.0)
    before = txids(pool)
    big = make_tx(3, 0, fee=1_800, data=bytes(200))  # beats fee 500, needs two slots
    assert reject_code(pool, big) is RejectCode.MEMPOOL_FULL
    assert txids(pool) == before
    assert pool.bytes_used == 3 * SIZE
    assert len(pool.select(10**6, 10)) == 3


def test_mempool_full_restores_the_replaced_transaction(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, max_bytes=2 * SIZE)
    old, other = make_tx(0, 0, fee=1_000), make_tx(1, 0, fee=2_000)
    pool.add(old, 0.0)
    pool.add(other, 0.0)
    bigger = make_tx(0, 0, fee=2_600, data=bytes(200))
    assert bigger.fee_rate > old.fee_rate
    assert reject_code(pool, bigger) is RejectCode.MEMPOOL_FULL
    assert txids(pool) == {old.txid, other.txid}
    assert pool.pending_for(old.sender) == [old]
    assert pool.bytes_used == 2 * SIZE


def test_transaction_larger_than_the_pool_is_rejected(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, max_bytes=SIZE)
    assert reject_code(pool, make_tx(0, 0, data=bytes(10))) is RejectCode.MEMPOOL_FULL
    assert len(pool) == 0
    assert pool.bytes_used == 0


# -- expiry ----------------------------------------------------------------------------


def test_expire_removes_only_old_transactions(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, expiry_seconds=100.0)
    old, young = make_tx(0, 0), make_tx(1, 0)
    pool.add(old, 0.0)
    pool.add(young, 50.0)
    assert pool.expire(100.0) == []  # exactly the expiry is not older than it
    assert pool.expire(100.5) == [old.txid]
    assert txids(pool) == {young.txid}
    assert pool.expire(151.0) == [young.txid]
    assert pool.bytes_used == 0


def test_expire_takes_the_later_nonces_with_it(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, expiry_seconds=100.0)
    n0, n1, n2 = make_tx(0, 0), make_tx(0, 1), make_tx(0, 2)
    other = make_tx(1, 0)
    pool.add(n0, 0.0)
    pool.add(n1, 90.0)
    pool.add(n2, 90.0)
    pool.add(other, 90.0)
    assert pool.expire(101.0) == [n0.txid, n1.txid, n2.txid]
    assert txids(pool) == {other.txid}


def test_expire_leaves_lower_nonces_alone(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, expiry_seconds=100.0)
    n0, n1 = make_tx(0, 0), make_tx(0, 1)
    pool.add(n1, 0.0)
    pool.add(n0, 50.0)
    assert pool.expire(101.0) == [n1.txid]
    assert txids(pool) == {n0.txid}


def test_replacement_restarts_the_clock(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, expiry_seconds=100.0)
    pool.add(make_tx(0, 0, fee=1_000), 0.0)
    new = make_tx(0, 0, fee=1_100)
    pool.add(new, 80.0)
    assert pool.expire(101.0) == []
    assert pool.expire(181.0) == [new.txid]


# -- chain events ----------------------------------------------------------------------


def connect(pool: Mempool, accounts: FakeAccounts, block: Sequence[VerifiedTx]) -> None:
    accounts.apply(block)
    pool.block_connected(block)


def disconnect(
    pool: Mempool, accounts: FakeAccounts, block: Sequence[VerifiedTx], now: float
) -> None:
    accounts.revert(block)
    pool.block_disconnected(block, now)


def test_block_connected_removes_included_and_promotes_successors(
    pool: Mempool, accounts: FakeAccounts
) -> None:
    n0, n1, n2 = make_tx(0, 0, fee=3_000), make_tx(0, 1, fee=3_000), make_tx(0, 2, fee=3_000)
    other = make_tx(1, 0, fee=1_000)
    for tx in (n0, n1, n2, other):
        pool.add(tx, 0.0)
    connect(pool, accounts, [n0, n1])
    assert txids(pool) == {n2.txid, other.txid}
    assert pool.bytes_used == 2 * SIZE
    assert pool.select(10**6, 10) == [n2, other]
    assert pool.next_nonce(addr(0)) == 3


def test_block_connected_drops_a_conflicting_same_nonce_tx(
    pool: Mempool, accounts: FakeAccounts
) -> None:
    ours = make_tx(0, 0, fee=1_000)
    pool.add(ours, 0.0)
    connect(pool, accounts, [make_tx(0, 0, fee=1_200)])  # mined elsewhere, not ours
    assert len(pool) == 0
    assert pool.bytes_used == 0


def test_block_connected_drops_what_became_unaffordable(
    pool: Mempool, accounts: FakeAccounts
) -> None:
    accounts.balances[addr(0)] = 3_030
    pool.add(make_tx(0, 0), 0.0)
    pool.add(make_tx(0, 1), 0.0)
    spend_all = make_tx(0, 0, fee=1_000, amount=2_000)  # a conflicting, costlier tx
    connect(pool, accounts, [spend_all])
    assert len(pool) == 0


def test_block_disconnected_readmits_the_blocks_transactions(
    pool: Mempool, accounts: FakeAccounts
) -> None:
    txs = [make_tx(0, 0, fee=2_000), make_tx(0, 1, fee=2_000), make_tx(1, 0, fee=1_000)]
    for tx in txs:
        pool.add(tx, 0.0)
    block = pool.select(10**6, 10)
    connect(pool, accounts, block)
    assert len(pool) == 0
    disconnect(pool, accounts, block, now=10.0)
    assert txids(pool) == {tx.txid for tx in txs}
    assert pool.select(10**6, 10) == block


def test_readmitted_transaction_gets_a_fresh_clock(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, expiry_seconds=100.0)
    tx = make_tx(0, 0)
    pool.add(tx, 0.0)
    connect(pool, accounts, [tx])
    disconnect(pool, accounts, [tx], now=90.0)
    assert pool.expire(101.0) == []
    assert pool.expire(191.0) == [tx.txid]


def test_block_disconnected_keeps_the_later_pending_nonces(
    pool: Mempool, accounts: FakeAccounts
) -> None:
    n0, n1, n2 = make_tx(0, 0), make_tx(0, 1), make_tx(0, 2)
    for tx in (n0, n1, n2):
        pool.add(tx, 0.0)
    connect(pool, accounts, [n0, n1])
    disconnect(pool, accounts, [n0, n1], now=5.0)
    assert pool.pending_for(addr(0)) == [n0, n1, n2]
    assert pool.select(10**6, 10) == [n0, n1, n2]
    assert pool.next_nonce(addr(0)) == 3


def test_block_disconnected_ignores_what_no_longer_fits(accounts: FakeAccounts) -> None:
    pool = Mempool(accounts, min_fee_rate=2.0)
    cheap = make_tx(0, 0, fee=300)  # another miner took it below our minimum
    fine = make_tx(1, 0, fee=1_000)
    connect(pool, accounts, [cheap, fine])
    disconnect(pool, accounts, [cheap, fine], now=1.0)
    assert txids(pool) == {fine.txid}


def test_block_disconnected_drops_spends_of_reverted_payments(
    pool: Mempool, accounts: FakeAccounts
) -> None:
    payee = 9  # starts with nothing
    payment = make_tx(0, 0, fee=1_000, amount=5_000, recipient=addr(payee))
    connect(pool, accounts, [payment])
    spend = make_tx(payee, 0, fee=1_000, amount=100)
    pool.add(spend, 1.0)
    disconnect(pool, accounts, [payment], now=2.0)
    assert txids(pool) == {payment.txid}


def test_block_disconnected_puts_the_blocks_txs_before_pending_ones(
    pool: Mempool, accounts: FakeAccounts
) -> None:
    payee = 9
    accounts.balances[addr(payee)] = 1_500
    payment = make_tx(0, 0, fee=1_000, amount=5_000, recipient=addr(payee))
    mined = make_tx(payee, 0)  # cost 1,010: affordable with or without the payment
    connect(pool, accounts, [payment, mined])
    pending = make_tx(payee, 1)  # affordable only thanks to the payment
    pool.add(pending, 1.0)
    disconnect(pool, accounts, [payment, mined], now=2.0)
    # Without the payment the payee affords one of its two: the mined one, which comes
    # first in nonce order, must win over the later pending one.
    assert txids(pool) == {payment.txid, mined.txid}


# -- wallet helpers --------------------------------------------------------------------


def test_pending_for_is_in_nonce_order(pool: Mempool) -> None:
    n0, n1, n2 = make_tx(0, 0), make_tx(0, 1), make_tx(0, 2)
    for tx in (n2, n0, n1):
        pool.add(tx, 0.0)
    assert pool.pending_for(addr(0)) == [n0, n1, n2]


def test_next_nonce_follows_the_contiguous_run(pool: Mempool, accounts: FakeAccounts) -> None:
    accounts.nonces[addr(0)] = 4
    assert pool.next_nonce(addr(0)) == 4
    for nonce in (4, 5, 7):
        pool.add(make_tx(0, nonce), 0.0)
    assert pool.next_nonce(addr(0)) == 6
    assert pool.next_nonce(addr(1)) == 0


# -- sans-IO ---------------------------------------------------------------------------

FORBIDDEN_MODULES = {"asyncio", "socket", "time", "threading", "selectors", "random"}


def test_mempool_module_is_sans_io() -> None:
    tree = ast.parse(Path(mempool_module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN_MODULES

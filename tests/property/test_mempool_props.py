"""Random add/select/mine/reorg/expire sequences keep the mempool's invariants.

Signing costs ~100 µs, so every transaction the machine can draw comes from a small
module-level cache: 4 senders x a few nonces x 4 fees x 2 amounts.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from unittest.mock import patch

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from meshchain.core.chain import mempool as mempool_module
from meshchain.core.chain.mempool import AddResult, Mempool, tx_cost
from meshchain.core.chain.tx import TxBody, VerifiedTx, sign_transaction, verify_transaction
from meshchain.core.crypto.address import address_from_public_key
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.errors import RejectCode, ValidationError

SENDERS = 4
MAX_DRAWN_NONCE = 5
FEES = (300, 600, 1_200, 2_400)  # all encode in 3 bytes: a tx without data is 165 bytes
AMOUNTS = (0, 100)
EXPIRY = 100.0
LARGE_POOL = 10**6
_VERIFIER = SignatureVerifier()
_KEYS = [SecretKey.generate(random.Random(1000 + i)) for i in range(SENDERS)]
# RECIPIENTS[0] is an outsider; RECIPIENTS[i + 1] is sender i's address.
RECIPIENTS = [bytes([0xEE]) * 20] + [address_from_public_key(k.public_key) for k in _KEYS]


@functools.cache
def cached_tx(
    signer: int, nonce: int, fee: int, amount: int, payee: int, data_size: int = 0
) -> VerifiedTx:
    key = _KEYS[signer]
    body = TxBody(
        chain_id=bytes(32),
        sender=key.public_key,
        recipient=RECIPIENTS[payee],
        amount=amount,
        fee=fee,
        nonce=nonce,
        data=bytes(data_size),
    )
    return verify_transaction(sign_transaction(body, key, bytes(32)), _VERIFIER)


signers = st.integers(0, SENDERS - 1)
fees = st.sampled_from(FEES)
amounts = st.sampled_from(AMOUNTS)
payees = st.integers(0, SENDERS)  # 0 pays an outsider, i > 0 pays sender i - 1
data_sizes = st.sampled_from([0, 0, 0, 150])  # mostly 165-byte transactions, some 315
txs = st.builds(
    cached_tx, signers, st.integers(0, MAX_DRAWN_NONCE), fees, amounts, payees, data_sizes
)


class Accounts:
    def __init__(self, balances: Sequence[int]) -> None:
        self.nonces: dict[bytes, int] = {}
        self.balances = {RECIPIENTS[i + 1]: balance for i, balance in enumerate(balances)}

    def account_nonce(self, address: bytes) -> int:
        return self.nonces.get(address, 0)

    def account_balance(self, address: bytes) -> int:
        return self.balances.get(address, 0)

    def apply(self, block: Sequence[VerifiedTx]) -> None:
        for vtx in block:
            body = vtx.tx.body
            assert body.nonce == self.account_nonce(vtx.sender)
            assert tx_cost(vtx) <= self.account_balance(vtx.sender)
            self.nonces[vtx.sender] = body.nonce + 1
            self.balances[vtx.sender] = self.account_balance(vtx.sender) - tx_cost(vtx)
            self.balances[body.recipient] = self.account_balance(body.recipient) + body.amount

    def revert(self, block: Sequence[VerifiedTx]) -> None:
        for vtx in reversed(block):
            body = vtx.tx.body
            self.nonces[vtx.sender] = body.nonce
            self.balances[vtx.sender] += tx_cost(vtx)
            self.balances[body.recipient] -= body.amount


class MempoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.max_bytes = LARGE_POOL
        self.accounts = Accounts([10**9] * SENDERS)
        self.pool = Mempool(self.accounts, max_bytes=self.max_bytes, expiry_seconds=EXPIRY)
        self.blocks: list[list[VerifiedTx]] = []
        self.seen_at: dict[bytes, float] = {}  # when each pooled txid (re)entered the pool

    @initialize(
        max_bytes=st.sampled_from([400, 700, 1_200, LARGE_POOL]),
        balances=st.lists(st.sampled_from([0, 1_000, 3_000, 10**9]), min_size=4, max_size=4),
    )
    def setup(self, max_bytes: int, balances: list[int]) -> None:
        self.max_bytes = max_bytes
        self.accounts = Accounts(balances)
        self.pool = Mempool(self.accounts, max_bytes=max_bytes, expiry_seconds=EXPIRY)

    # -- helpers -----------------------------------------------------------------------

    def snapshot(self) -> tuple[frozenset[bytes], int]:
        return frozenset(vtx.txid for vtx in self.pool), self.pool.bytes_used

    def note_arrivals(self) -> None:
        pooled = {vtx.txid for vtx in self.pool}
        self.seen_at = {txid: self.seen_at.get(txid, self.now) for txid in pooled}

    def check_selection(self, block: list[VerifiedTx], max_bytes: int, max_count: int) -> None:
        assert len(block) <= max_count
        assert sum(vtx.size for vtx in block) <= max_bytes
        expected_nonce: dict[bytes, int] = {}
        budget: dict[bytes, int] = {}
        for vtx in block:
            assert vtx.txid in self.pool
            sender = vtx.sender
            nonce = expected_nonce.get(sender, self.accounts.account_nonce(sender))
            assert vtx.tx.body.nonce == nonce
            expected_nonce[sender] = nonce + 1
            budget[sender] = budget.get(sender, self.accounts.account_balance(sender))
            budget[sender] -= tx_cost(vtx)
            assert budget[sender] >= 0

    def connect(self, block: list[VerifiedTx]) -> None:
        self.accounts.apply(block)
        self.pool.block_connected(block)
        self.blocks.append(block)
        assert not any(vtx.txid in self.pool for vtx in block)
        self.note_arrivals()

    # -- rules -------------------------------------------------------------------------

    @rule(vtx=txs)
    def add(self, vtx: VerifiedTx) -> None:
        before = self.snapshot()
        before_txs = list(self.pool)
        same_slot = [
            old
            for old in self.pool.pending_for(vtx.sender)
            if old.tx.body.nonce == vtx.tx.body.nonce
        ]
        rejected: RejectCode | None = None
        try:
            result = self.pool.add(vtx, self.now)
        except ValidationError as exc:
            rejected = exc.code
        if rejected is not None:
            assert self.snapshot() == before, rejected
            assert rejected is not RejectCode.MEMPOOL_FULL or self.max_bytes != LARGE_POOL
            return
        assert vtx.txid in self.pool
        assert (result is AddResult.REPLACED) == bool(same_slot)
        for old in same_slot:
            assert old.txid not in self.pool
        # Eviction never strands a transaction: whatever a sender lost lay above all it kept.
        gone = [old for old in before_txs if old.txid not in self.pool and old not in same_slot]
        for old in gone:
            kept = [tx.tx.body.nonce for tx in self.pool.pending_for(old.sender)]
            assert all(nonce < old.tx.body.nonce for nonce in kept)
        self.note_arrivals()

    @rule(max_bytes=st.integers(0, 1_200), max_count=st.integers(0, 8))
    def select(self, max_bytes: int, max_count: int) -> None:
        self.check_selection(self.pool.select(max_bytes, max_count), max_bytes, max_count)

    @rule(max_bytes=st.integers(0, 1_200), max_count=st.integers(0, 8))
    def mine(self, max_bytes: int, max_count: int) -> None:
        block = self.pool.select(max_bytes, max_count)
        self.check_selection(block, max_bytes, max_count)
        self.connect(block)

    @rule(signer=signers, fee=fees, amount=amounts, payee=payees)
    def mine_foreign(self, signer: int, fee: int, amount: int, payee: int) -> None:
        """A block from another miner, with a transaction the pool may not have."""
        sender = RECIPIENTS[signer + 1]
        vtx = cached_tx(signer, self.accounts.account_nonce(sender), fee, amount, payee)
        if tx_cost(vtx) <= self.accounts.account_balance(sender):
            self.connect([vtx])

    @precondition(lambda self: bool(self.blocks))
    @rule()
    def reorg(self) -> None:
        block = self.blocks.pop()
        self.accounts.revert(block)
        self.pool.block_disconnected(block, self.now)
        self.note_arrivals()
        if self.max_bytes == LARGE_POOL:
            # In a pool with room, each sender keeps the prefix of its block txs it can pay.
            budget: dict[bytes, int] = {}
            stopped: set[bytes] = set()
            for vtx in block:
                sender = vtx.sender
                budget[sender] = budget.get(sender, self.accounts.account_balance(sender))
                budget[sender] -= tx_cost(vtx)
                if budget[sender] < 0:
                    stopped.add(sender)
                if sender not in stopped:
                    assert vtx.txid in self.pool

    @rule(seconds=st.sampled_from([0.0, 1.0, 30.0, 40.0, 60.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def expire(self) -> None:
        before_txs = list(self.pool)
        before = {vtx.txid for vtx in before_txs}
        removed = self.pool.expire(self.now)
        after = {vtx.txid for vtx in self.pool}
        assert set(removed) == before - after
        assert len(removed) == len(set(removed))
        assert all(self.seen_at[txid] + EXPIRY >= self.now for txid in after)
        # Each removed tx is old, or above an old one of its sender that was removed.
        gone = [vtx for vtx in before_txs if vtx.txid in set(removed)]
        for vtx in gone:
            assert any(
                old.sender == vtx.sender
                and old.tx.body.nonce <= vtx.tx.body.nonce
                and self.seen_at[old.txid] + EXPIRY < self.now
                for old in gone
            )
        self.note_arrivals()

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def sizes_add_up(self) -> None:
        pooled = list(self.pool)
        assert self.pool.bytes_used == sum(vtx.size for vtx in pooled)
        assert self.pool.bytes_used <= self.max_bytes
        assert len(self.pool) == len(pooled)

    @invariant()
    def one_tx_per_sender_and_nonce(self) -> None:
        pooled = list(self.pool)
        slots = {(vtx.sender, vtx.tx.body.nonce) for vtx in pooled}
        assert len(slots) == len(pooled)
        by_sender = [self.pool.pending_for(sender) for sender in RECIPIENTS[1:]]
        assert sum(len(pending) for pending in by_sender) == len(pooled)
        for pending in by_sender:
            nonces = [vtx.tx.body.nonce for vtx in pending]
            assert nonces == sorted(set(nonces))
            assert all(
                n >= self.accounts.account_nonce(vtx.sender) for n, vtx in zip(nonces, pending)
            )

    @invariant()
    def next_nonce_follows_the_contiguous_run(self) -> None:
        for sender in RECIPIENTS[1:]:
            nonces = {vtx.tx.body.nonce for vtx in self.pool.pending_for(sender)}
            expected = self.accounts.account_nonce(sender)
            while expected in nonces:
                expected += 1
            assert self.pool.next_nonce(sender) == expected

    @invariant()
    def lookups_agree(self) -> None:
        for vtx in self.pool:
            assert vtx.txid in self.pool
            assert self.pool.get(vtx.txid) == vtx


MempoolMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
TestMempoolMachine = MempoolMachine.TestCase


def test_machine_with_constant_heap_compaction() -> None:
    """HEAP_SLACK = 0 rebuilds the lazy heaps on almost every change: they must stay right."""
    with patch.object(mempool_module, "HEAP_SLACK", 0):
        run_state_machine_as_test(
            MempoolMachine,
            settings=settings(max_examples=100, stateful_step_count=40, deadline=None),
        )

"""Ledger state: accounts with balance and nonce, a state root, and exact apply/undo.

Each account is a leaf of a Merkle tree, placed by creation order (genesis allocations
first, then first appearance as a recipient or beneficiary). The leaf hashes the
address, balance and nonce, so any change to any account changes the root; creation
order is fixed by the chain, so every node computes the same root. A block's apply
returns undo data that restores the exact prior state, which makes reorgs exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshchain.core.chain.tx import VerifiedTx
from meshchain.core.crypto.hashing import tagged_hasher
from meshchain.core.crypto.merkle import MerkleProof, MerkleTree
from meshchain.core.store import AccountRecord
from meshchain.core.wire.codec import Address20, Codec, UInt, WireStruct
from meshchain.errors import RejectCode, ValidationError

# 21M coins of 10**8 units, like Bitcoin's MAX_MONEY: no balance or supply may exceed it,
# so sums of balances never leave int64 (msgspec and SQLite both bound integers there).
MAX_MONEY = 21_000_000 * 10**8
FEE_BURN_DENOMINATOR = 10_000  # fee_burn_bps is in basis points
MAX_UNDO_SIZE = 64 * 1024 * 1024

_account_leaf = tagged_hasher("meshchain/account")


def account_leaf(address: bytes, balance: int, nonce: int) -> bytes:
    return _account_leaf(address + balance.to_bytes(8, "big") + nonce.to_bytes(8, "big"))


class PriorAccount(WireStruct, frozen=True):
    """An account's state before a block touched it."""

    address: Address20
    balance: UInt
    nonce: UInt


class BlockUndo(WireStruct, frozen=True):
    """What it takes to undo one block: prior states, accounts created, supply counters."""

    prior: list[PriorAccount]
    created: UInt  # accounts appended by the block; undo pops them
    minted_before: UInt
    burnt_before: UInt


UNDO_CODEC: Codec[BlockUndo] = Codec(BlockUndo, MAX_UNDO_SIZE)


@dataclass(frozen=True, slots=True)
class BlockEconomics:
    """Who is paid for a block and how much of its fees are burnt."""

    beneficiary: bytes
    reward: int
    fee_burn_bps: int


@dataclass(slots=True)
class _Account:
    balance: int
    nonce: int
    index: int


class Ledger:
    """The account state at the current tip, with its Merkle commitment."""

    def __init__(self, allocated: int = 0) -> None:
        self._accounts: dict[bytes, _Account] = {}
        self._order: list[bytes] = []
        self._tree = MerkleTree()
        self.allocated = allocated  # total of the genesis allocations
        self.minted = 0  # block rewards so far
        self.burnt = 0  # fees burnt so far
        self._touched: set[bytes] = set()

    # --- reading -------------------------------------------------------------------

    def account_nonce(self, address: bytes) -> int:
        account = self._accounts.get(address)
        return account.nonce if account is not None else 0

    def account_balance(self, address: bytes) -> int:
        account = self._accounts.get(address)
        return account.balance if account is not None else 0

    def record(self, address: bytes) -> AccountRecord | None:
        account = self._accounts.get(address)
        if account is None:
            return None
        return AccountRecord(address, account.balance, account.nonce, account.index)

    def records(self) -> Iterable[AccountRecord]:
        for address in self._order:
            record = self.record(address)
            assert record is not None
            yield record

    def newest_addresses(self, count: int) -> list[bytes]:
        """The addresses of the `count` most recently created accounts."""
        return self._order[len(self._order) - count :] if count else []

    def __len__(self) -> int:
        return len(self._order)

    def total_balance(self) -> int:
        return sum(account.balance for account in self._accounts.values())

    def expected_supply(self) -> int:
        return self.allocated + self.minted - self.burnt

    def state_root(self) -> bytes:
        tree = self._tree
        for address in self._touched:
            account = self._accounts.get(address)
            if account is not None:
                tree.update(account.index, account_leaf(address, account.balance, account.nonce))
        self._touched.clear()
        return tree.root()

    def proof(self, address: bytes) -> tuple[AccountRecord, MerkleProof] | None:
        """The account and its Merkle proof against `state_root()` (for light clients)."""
        self.state_root()
        record = self.record(address)
        return None if record is None else (record, self._tree.proof(record.index))

    # --- loading -------------------------------------------------------------------

    def load(self, records: Iterable[AccountRecord], minted: int, burnt: int) -> None:
        """Restore from the store; records must come in index order, without gaps."""
        for record in records:
            if record.index != len(self._order):
                raise ValueError(f"account index {record.index} out of order")
            self._create(record.address, record.balance, record.nonce)
        self.minted, self.burnt = minted, burnt

    def credit_genesis(self, address: bytes, amount: int) -> None:
        if not 0 < amount <= MAX_MONEY or self.allocated + amount > MAX_MONEY:
            raise ValidationError(RejectCode.OVERFLOW, "genesis allocation out of range")
        account = self._accounts.get(address)
        if account is None:
            self._create(address, amount, 0)
        else:
            account.balance += amount
            self._touched.add(address)
        self.allocated += amount

    def _create(self, address: bytes, balance: int, nonce: int) -> _Account:
        account = _Account(balance, nonce, len(self._order))
        self._accounts[address] = account
        self._order.append(address)
        self._tree.append(account_leaf(address, balance, nonce))
        return account

    # --- applying blocks -------------------------------------------------------------

    def apply_block(self, txs: Sequence[VerifiedTx], economics: BlockEconomics) -> BlockUndo:
        """Apply every transaction and pay the block; all or nothing.

        On a rule violation the state is rolled back to what it was and ValidationError
        says which transaction broke which rule.
        """
        accounts = self._accounts
        prior: dict[bytes, PriorAccount] = {}
        created_before = len(self._order)
        minted_before, burnt_before = self.minted, self.burnt
        fees = 0
        try:
            for position, vtx in enumerate(txs):
                body = vtx.tx.body
                sender = accounts.get(vtx.sender)
                if sender is None or sender.nonce != body.nonce:
                    have = 0 if sender is None else sender.nonce
                    raise ValidationError(
                        RejectCode.BAD_NONCE,
                        f"tx {position}: nonce {body.nonce}, account expects {have}",
                    )
                cost = body.amount + body.fee
                if cost > sender.balance:
                    raise ValidationError(
                        RejectCode.INSUFFICIENT_FUNDS,
                        f"tx {position}: needs {cost}, balance {sender.balance}",
                    )
                if vtx.sender not in prior:
                    prior[vtx.sender] = PriorAccount(vtx.sender, sender.balance, sender.nonce)
                sender.balance -= cost
                sender.nonce += 1
                self._credit(body.recipient, body.amount, prior)
                fees += body.fee
            burnt = fees * economics.fee_burn_bps // FEE_BURN_DENOMINATOR
            payout = economics.reward + fees - burnt
            if self.minted + economics.reward > MAX_MONEY:
                raise ValidationError(RejectCode.OVERFLOW, "block reward exceeds MAX_MONEY")
            if payout:
                self._credit(economics.beneficiary, payout, prior)
            self.minted += economics.reward
            self.burnt += burnt
        except BaseException:
            self._restore(list(prior.values()), len(self._order) - created_before)
            self.minted, self.burnt = minted_before, burnt_before
            raise
        self._touched.update(prior)
        # Accounts created by this block have no prior state; their leaves were appended.
        return BlockUndo(
            [entry for address, entry in prior.items() if accounts[address].index < created_before],
            len(self._order) - created_before,
            minted_before,
            burnt_before,
        )

    def _credit(self, address: bytes, amount: int, prior: dict[bytes, PriorAccount]) -> None:
        account = self._accounts.get(address)
        if account is None:
            account = self._create(address, 0, 0)
            prior[address] = PriorAccount(address, 0, 0)
        elif address not in prior:
            prior[address] = PriorAccount(address, account.balance, account.nonce)
        if account.balance + amount > MAX_MONEY:
            raise ValidationError(RejectCode.OVERFLOW, "balance would exceed MAX_MONEY")
        account.balance += amount

    def undo_block(self, undo: BlockUndo) -> list[bytes]:
        """Restore the state before the block; returns the addresses of removed accounts."""
        removed = self.newest_addresses(undo.created)
        self._restore(undo.prior, undo.created)
        self.minted, self.burnt = undo.minted_before, undo.burnt_before
        return removed

    def _restore(self, prior: Iterable[PriorAccount], created: int) -> None:
        for _ in range(created):
            address = self._order.pop()
            del self._accounts[address]
            self._tree.pop()
            self._touched.discard(address)
        for entry in prior:
            account = self._accounts.get(entry.address)
            if account is None:
                continue  # created by the block and popped above
            account.balance, account.nonce = entry.balance, entry.nonce
            self._touched.add(entry.address)

"""The narrow storage interface the chain core depends on, and an in-memory implementation.

Calls are synchronous: SQLite answers in microseconds and the core stays free of
`await`. Everything one chain step changes travels in one `WriteBatch`, which a store
commits atomically: after a crash the store holds the whole step or none of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BlockIndexEntry:
    """What fork choice needs about a block, kept in memory for every stored block."""

    hash: bytes
    parent: bytes
    height: int
    timestamp_ms: int
    chain_weight: int  # cumulative weight from genesis, as the engine scores it (may be huge)
    sequence: int  # arrival order, unique: among equal weights the earlier block wins
    invalid: bool = False

    def marked_invalid(self) -> BlockIndexEntry:
        return replace(self, invalid=True)


@dataclass(frozen=True, slots=True)
class AccountRecord:
    address: bytes
    balance: int
    nonce: int
    index: int  # position of the account's leaf in the state tree; unique, never reassigned


@dataclass(frozen=True, slots=True)
class TxLocation:
    txid: bytes
    block_hash: bytes
    height: int
    position: int


@dataclass(slots=True)
class WriteBatch:
    """Everything one chain step changes, committed atomically by `ChainStore.write`."""

    new_blocks: list[tuple[BlockIndexEntry, bytes]] = field(default_factory=list)
    updated_entries: list[BlockIndexEntry] = field(default_factory=list)
    accounts_put: list[AccountRecord] = field(default_factory=list)
    accounts_deleted: list[bytes] = field(default_factory=list)
    undo_put: list[tuple[bytes, bytes]] = field(default_factory=list)
    undo_deleted: list[bytes] = field(default_factory=list)
    # Each indexed transaction with the addresses it touches (sender, recipient).
    txs_indexed: list[tuple[TxLocation, tuple[bytes, ...]]] = field(default_factory=list)
    txs_unindexed: list[bytes] = field(default_factory=list)
    tip: bytes | None = None
    meta: dict[str, bytes] = field(default_factory=dict)
    # The consensus write-ahead log: records (height, bytes) appended in order, and the
    # records of heights below `wal_keep_from` dropped (deletion first, as always).
    wal_append: list[tuple[int, bytes]] = field(default_factory=list)
    wal_keep_from: int | None = None


class ChainStore(Protocol):
    """Blocks, the block index, ledger state, undo data and the transaction index."""

    def block_entries(self) -> Iterator[BlockIndexEntry]:
        """Every block index entry, in arrival (`sequence`) order."""
        ...

    def get_block(self, block_hash: bytes) -> bytes | None: ...

    def get_undo(self, block_hash: bytes) -> bytes | None: ...

    def accounts(self) -> Iterator[AccountRecord]:
        """Every account, in `index` order."""
        ...

    def get_account(self, address: bytes) -> AccountRecord | None: ...

    def tip(self) -> bytes | None: ...

    def get_meta(self, key: str) -> bytes | None: ...

    def find_tx(self, txid: bytes) -> TxLocation | None: ...

    def txs_by_address(self, address: bytes, limit: int) -> list[TxLocation]:
        """The newest `limit` (>= 0) indexed transactions touching `address`, newest first."""
        ...

    def wal_records(self) -> list[tuple[int, bytes]]:
        """The consensus write-ahead log, oldest record first."""
        ...

    def write(self, batch: WriteBatch) -> None:
        """Apply the whole batch atomically (deletions first, then puts).

        Raises StoreError when the store cannot commit; nothing of the batch remains then.
        """
        ...

    def close(self) -> None: ...


class MemoryStore:
    """A `ChainStore` in dictionaries, for unit tests and the simulator."""

    def __init__(self) -> None:
        self._entries: dict[bytes, BlockIndexEntry] = {}
        self._blocks: dict[bytes, bytes] = {}
        self._undo: dict[bytes, bytes] = {}
        self._accounts: dict[bytes, AccountRecord] = {}
        self._txs: dict[bytes, TxLocation] = {}
        self._tx_addresses: dict[bytes, tuple[bytes, ...]] = {}
        self._by_address: dict[bytes, dict[bytes, TxLocation]] = {}
        self._tip: bytes | None = None
        self._meta: dict[str, bytes] = {}
        self._wal: list[tuple[int, bytes]] = []

    def block_entries(self) -> Iterator[BlockIndexEntry]:
        return iter(sorted(self._entries.values(), key=lambda entry: entry.sequence))

    def get_block(self, block_hash: bytes) -> bytes | None:
        return self._blocks.get(block_hash)

    def get_undo(self, block_hash: bytes) -> bytes | None:
        return self._undo.get(block_hash)

    def accounts(self) -> Iterator[AccountRecord]:
        return iter(sorted(self._accounts.values(), key=lambda record: record.index))

    def get_account(self, address: bytes) -> AccountRecord | None:
        return self._accounts.get(address)

    def tip(self) -> bytes | None:
        return self._tip

    def get_meta(self, key: str) -> bytes | None:
        return self._meta.get(key)

    def find_tx(self, txid: bytes) -> TxLocation | None:
        return self._txs.get(txid)

    def txs_by_address(self, address: bytes, limit: int) -> list[TxLocation]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        found = self._by_address.get(address, {}).values()
        newest = sorted(found, key=lambda loc: (loc.height, loc.position), reverse=True)
        return newest[:limit]

    def wal_records(self) -> list[tuple[int, bytes]]:
        return list(self._wal)

    def write(self, batch: WriteBatch) -> None:
        if batch.wal_keep_from is not None:
            self._wal = [record for record in self._wal if record[0] >= batch.wal_keep_from]
        self._wal.extend(batch.wal_append)
        for address in batch.accounts_deleted:
            self._accounts.pop(address, None)
        for block_hash in batch.undo_deleted:
            self._undo.pop(block_hash, None)
        for txid in batch.txs_unindexed:
            self._txs.pop(txid, None)
            for address in self._tx_addresses.pop(txid, ()):
                self._by_address.get(address, {}).pop(txid, None)
        for entry, raw in batch.new_blocks:
            self._entries[entry.hash] = entry
            self._blocks[entry.hash] = raw
        for entry in batch.updated_entries:
            self._entries[entry.hash] = entry
        for record in batch.accounts_put:
            self._accounts[record.address] = record
        for block_hash, undo in batch.undo_put:
            self._undo[block_hash] = undo
        for location, addresses in batch.txs_indexed:
            for stale in self._tx_addresses.get(location.txid, ()):
                self._by_address.get(stale, {}).pop(location.txid, None)
            self._txs[location.txid] = location
            self._tx_addresses[location.txid] = addresses
            for address in addresses:
                self._by_address.setdefault(address, {})[location.txid] = location
        if batch.tip is not None:
            self._tip = batch.tip
        self._meta.update(batch.meta)

    def snapshot(self) -> WriteBatch:
        """Everything held, as one batch: written into an empty store, it copies this one
        (the simulator preloads nodes this way, benchmarks build databases)."""
        return WriteBatch(
            new_blocks=[(entry, self._blocks[entry.hash]) for entry in self.block_entries()],
            accounts_put=list(self.accounts()),
            undo_put=list(self._undo.items()),
            txs_indexed=[(loc, self._tx_addresses[txid]) for txid, loc in self._txs.items()],
            tip=self._tip,
            meta=dict(self._meta),
        )

    def close(self) -> None:
        """Nothing to release."""

"""`ChainStore` on one SQLite file, standard library only.

Every `WriteBatch` is one `BEGIN IMMEDIATE` ... `COMMIT` transaction in WAL mode, so a
crash leaves either the whole chain step or none of it. `synchronous=FULL` is the
default: a node must never lose a block it already reported as committed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

from meshchain.core.store import AccountRecord, BlockIndexEntry, TxLocation, WriteBatch
from meshchain.errors import StoreError

__all__ = ["SCHEMA_VERSION", "SqliteChainStore"]

SCHEMA_VERSION = 2
_WEIGHT_SIZE = 32  # chain weights are cumulative work, up to 2**256: stored big-endian
_SYNCHRONOUS_MODES = ("FULL", "NORMAL")
# Ours: the page cache, KiB. SQLite's default is 2 MB, less than the index pages one
# block of a few thousand transactions touches (each lands on a random page of the txid
# and address indexes), so every block read them back from disk; bitcoind's -dbcache
# defaults to 450 MiB. 64 MiB holds them for a few hundred thousand transactions.
PAGE_CACHE_KIB = 64 * 1024
# Meta key present once the store has connected blocks without indexing their transactions.
_TX_INDEX_OFF = "tx_index_off"

# Version 2: the BFT write-ahead log (core/consensus/bftwal.py).
_CONSENSUS_WAL_TABLE = """CREATE TABLE IF NOT EXISTS consensus_wal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    height INTEGER NOT NULL,
    record BLOB NOT NULL
)"""
# Small, hot rows are WITHOUT ROWID; tables of large blobs keep a rowid (SQLite's advice).
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS block_index (
        hash BLOB PRIMARY KEY,
        parent BLOB NOT NULL,
        height INTEGER NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        chain_weight BLOB NOT NULL,
        sequence INTEGER NOT NULL,
        invalid INTEGER NOT NULL CHECK (invalid IN (0, 1))
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS block_index_sequence ON block_index (sequence)",
    "CREATE TABLE IF NOT EXISTS blocks (hash BLOB PRIMARY KEY, raw BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS undo (hash BLOB PRIMARY KEY, data BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS accounts (
        address BLOB PRIMARY KEY,
        balance INTEGER NOT NULL,
        nonce INTEGER NOT NULL,
        idx INTEGER NOT NULL UNIQUE
    )""",
    """CREATE TABLE IF NOT EXISTS txs (
        txid BLOB PRIMARY KEY,
        block_hash BLOB NOT NULL,
        height INTEGER NOT NULL,
        position INTEGER NOT NULL
    ) WITHOUT ROWID""",
    # height/position are copied here so `txs_by_address` is one index range scan.
    """CREATE TABLE IF NOT EXISTS tx_addresses (
        txid BLOB NOT NULL,
        address BLOB NOT NULL,
        height INTEGER NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (txid, address)
    ) WITHOUT ROWID""",
    """CREATE INDEX IF NOT EXISTS tx_addresses_by_address
        ON tx_addresses (address, height, position)""",
    "CREATE TABLE IF NOT EXISTS tip (id INTEGER PRIMARY KEY CHECK (id = 0), hash BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    _CONSENSUS_WAL_TABLE,
)
# Schema changes by version: what turns a store of version k - 1 into version k.
_MIGRATIONS: dict[int, tuple[str, ...]] = {2: (_CONSENSUS_WAL_TABLE,)}

_ENTRY_COLUMNS = "hash, parent, height, timestamp_ms, chain_weight, sequence, invalid"
_PUT_ENTRY = f"INSERT OR REPLACE INTO block_index ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
# An upsert, not INSERT OR REPLACE: REPLACE would silently delete whichever other account
# held the same `idx`; this way a clash fails the batch instead.
_PUT_ACCOUNT = """INSERT INTO accounts (address, balance, nonce, idx) VALUES (?, ?, ?, ?)
    ON CONFLICT (address) DO UPDATE
    SET balance = excluded.balance, nonce = excluded.nonce, idx = excluded.idx"""


def _without_tx_index(batch: WriteBatch) -> WriteBatch:
    return dataclasses.replace(batch, txs_indexed=[], txs_unindexed=[])


def _weight_to_blob(weight: int) -> bytes:
    if not 0 <= weight < 1 << (8 * _WEIGHT_SIZE):
        raise StoreError(f"chain weight {weight} does not fit in {_WEIGHT_SIZE} unsigned bytes")
    return weight.to_bytes(_WEIGHT_SIZE, "big")


def _entry_row(entry: BlockIndexEntry) -> tuple[object, ...]:
    return (
        entry.hash,
        entry.parent,
        entry.height,
        entry.timestamp_ms,
        _weight_to_blob(entry.chain_weight),
        entry.sequence,
        int(entry.invalid),
    )


def _entry_from_row(row: Any) -> BlockIndexEntry:
    return BlockIndexEntry(
        hash=bytes(row[0]),
        parent=bytes(row[1]),
        height=int(row[2]),
        timestamp_ms=int(row[3]),
        chain_weight=int.from_bytes(row[4], "big"),
        sequence=int(row[5]),
        invalid=bool(row[6]),
    )


def _location_from_row(row: Any) -> TxLocation:
    return TxLocation(
        txid=bytes(row[0]), block_hash=bytes(row[1]), height=int(row[2]), position=int(row[3])
    )


class SqliteChainStore:
    """A durable `ChainStore` in one SQLite database file (plus its WAL)."""

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: str = "FULL", tx_index: bool = True
    ) -> None:
        """`tx_index` False: no transaction index (bitcoind's -txindex=0, CometBFT's
        indexer "null"), a validator's choice; once run so, the index stays incomplete."""
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {_SYNCHRONOUS_MODES}, not {synchronous!r}"
            )
        self._path = os.fspath(path)
        self._conn: sqlite3.Connection | None = None
        self._tx_index = tx_index
        try:
            conn = sqlite3.connect(self._path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self._path!r}: {exc}") from exc
        try:
            self._prepare(conn, mode)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{self._path!r} is not a usable meshchain store: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection, mode: str) -> None:
        """Check the schema version before changing anything, then configure and migrate."""
        # Reading the header is also what exposes a file that is not SQLite at all.
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if not 0 <= version <= SCHEMA_VERSION:
            raise StoreError(
                f"{self._path!r} has schema version {version}; this meshchain reads only"
                f" version {SCHEMA_VERSION} (is it from a newer release?)"
            )
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError(f"{self._path!r} is an SQLite database but not a meshchain store")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={mode}")
        conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        if version < SCHEMA_VERSION:
            # One transaction: a crash here leaves the file as it was, never half a schema.
            statements = (
                _SCHEMA
                if version == 0
                else [sql for v in range(version + 1, SCHEMA_VERSION + 1) for sql in _MIGRATIONS[v]]
            )
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        gap = conn.execute("SELECT value FROM meta WHERE key = ?", (_TX_INDEX_OFF,)).fetchone()
        if self._tx_index and gap is not None:
            raise StoreError(
                f"{self._path!r} was run without its transaction index ([storage] tx_index ="
                " false), so the index misses transactions; keep tx_index = false"
            )
        if not self._tx_index and gap is None:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_TX_INDEX_OFF, b"1"))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self._path!r} is closed")
        return self._conn

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """Run a read and fetch every row now, so callers may `write` while iterating."""
        conn = self._connection()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"reading store {self._path!r} failed: {exc}") from exc

    def _blob(self, sql: str, key: object) -> bytes | None:
        rows = self._query(sql, (key,))
        return bytes(rows[0][0]) if rows else None

    def block_entries(self) -> Iterator[BlockIndexEntry]:
        rows = self._query(f"SELECT {_ENTRY_COLUMNS} FROM block_index ORDER BY sequence, hash")
        return iter([_entry_from_row(row) for row in rows])

    def get_block(self, block_hash: bytes) -> bytes | None:
        return self._blob("SELECT raw FROM blocks WHERE hash = ?", block_hash)

    def get_undo(self, block_hash: bytes) -> bytes | None:
        return self._blob("SELECT data FROM undo WHERE hash = ?", block_hash)

    def accounts(self) -> Iterator[AccountRecord]:
        rows = self._query("SELECT address, balance, nonce, idx FROM accounts ORDER BY idx")
        return iter([AccountRecord(bytes(a), int(b), int(n), int(i)) for a, b, n, i in rows])

    def get_account(self, address: bytes) -> AccountRecord | None:
        rows = self._query(
            "SELECT address, balance, nonce, idx FROM accounts WHERE address = ?", (address,)
        )
        if not rows:
            return None
        found, balance, nonce, index = rows[0]
        return AccountRecord(bytes(found), int(balance), int(nonce), int(index))

    def tip(self) -> bytes | None:
        return self._blob("SELECT hash FROM tip WHERE id = ?", 0)

    def get_meta(self, key: str) -> bytes | None:
        return self._blob("SELECT value FROM meta WHERE key = ?", key)

    def _check_tx_index(self) -> None:
        if not self._tx_index:
            raise StoreError(f"store {self._path!r} keeps no transaction index")

    def find_tx(self, txid: bytes) -> TxLocation | None:
        self._check_tx_index()
        rows = self._query(
            "SELECT txid, block_hash, height, position FROM txs WHERE txid = ?", (txid,)
        )
        return _location_from_row(rows[0]) if rows else None

    def txs_by_address(self, address: bytes, limit: int) -> list[TxLocation]:
        self._check_tx_index()
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            return []
        rows = self._query(
            """SELECT t.txid, t.block_hash, t.height, t.position
            FROM tx_addresses AS a JOIN txs AS t ON t.txid = a.txid
            WHERE a.address = ?
            ORDER BY a.height DESC, a.position DESC
            LIMIT ?""",
            (address, limit),
        )
        return [_location_from_row(row) for row in rows]

    def write(self, batch: WriteBatch) -> None:
        """Apply the whole batch in one transaction; on any error nothing of it remains."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._apply(conn, batch if self._tx_index else _without_tx_index(batch))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # keep the original error
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"writing store {self._path!r} failed: {exc}") from exc

    def wal_records(self) -> list[tuple[int, bytes]]:
        rows = self._query("SELECT height, record FROM consensus_wal ORDER BY seq")
        return [(int(row[0]), bytes(row[1])) for row in rows]

    @staticmethod
    def _apply(conn: sqlite3.Connection, batch: WriteBatch) -> None:
        """Same order as `MemoryStore.write`: deletions first, then puts."""
        if batch.wal_keep_from is not None:
            conn.execute("DELETE FROM consensus_wal WHERE height < ?", (batch.wal_keep_from,))
        conn.executemany(
            "INSERT INTO consensus_wal (height, record) VALUES (?, ?)", batch.wal_append
        )
        conn.executemany(
            "DELETE FROM accounts WHERE address = ?", [(a,) for a in batch.accounts_deleted]
        )
        conn.executemany("DELETE FROM undo WHERE hash = ?", [(h,) for h in batch.undo_deleted])
        unindexed = [(txid,) for txid in batch.txs_unindexed]
        conn.executemany("DELETE FROM txs WHERE txid = ?", unindexed)
        conn.executemany("DELETE FROM tx_addresses WHERE txid = ?", unindexed)
        for entry, raw in batch.new_blocks:
            conn.execute(_PUT_ENTRY, _entry_row(entry))
            conn.execute(
                "INSERT OR REPLACE INTO blocks (hash, raw) VALUES (?, ?)", (entry.hash, raw)
            )
        conn.executemany(_PUT_ENTRY, [_entry_row(entry) for entry in batch.updated_entries])
        conn.executemany(
            _PUT_ACCOUNT, [(r.address, r.balance, r.nonce, r.index) for r in batch.accounts_put]
        )
        conn.executemany("INSERT OR REPLACE INTO undo (hash, data) VALUES (?, ?)", batch.undo_put)
        if batch.txs_indexed:
            # One statement per table for the whole block (a block holds thousands); a
            # txid listed twice keeps its last location, as one statement each would.
            indexed = {loc.txid: (loc, addresses) for loc, addresses in batch.txs_indexed}
            conn.executemany(
                "INSERT OR REPLACE INTO txs (txid, block_hash, height, position)"
                " VALUES (?, ?, ?, ?)",
                [
                    (loc.txid, loc.block_hash, loc.height, loc.position)
                    for loc, _ in indexed.values()
                ],
            )
            # Re-indexing a txid replaces its address set rather than adding to it.
            conn.executemany("DELETE FROM tx_addresses WHERE txid = ?", [(t,) for t in indexed])
            conn.executemany(
                "INSERT OR IGNORE INTO tx_addresses (txid, address, height, position)"
                " VALUES (?, ?, ?, ?)",
                [
                    (loc.txid, address, loc.height, loc.position)
                    for loc, addresses in indexed.values()
                    for address in addresses
                ],
            )
        if batch.tip is not None:
            conn.execute("INSERT OR REPLACE INTO tip (id, hash) VALUES (0, ?)", (batch.tip,))
        conn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(batch.meta.items())
        )

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> SqliteChainStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

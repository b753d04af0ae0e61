"""One contract for every `ChainStore`: `MemoryStore` and `SqliteChainStore` must agree.

The SQLite-only tests at the end cover what memory cannot: durability across reopen,
all-or-nothing batches, and refusing files that are not our database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from meshchain.core.store import (
    AccountRecord,
    BlockIndexEntry,
    ChainStore,
    MemoryStore,
    TxLocation,
    WriteBatch,
)
from meshchain.errors import StoreError
from meshchain.storage import sqlite as sqlite_module
from meshchain.storage.sqlite import SCHEMA_VERSION, SqliteChainStore

HUGE_WEIGHT = 2**200 + 7
MAX_WEIGHT = 2**256 - 1
INT64_MAX = 2**63 - 1


def h(n: int) -> bytes:
    """A distinct 32-byte hash per number."""
    return n.to_bytes(32, "big")


def addr(n: int) -> bytes:
    return b"A" + n.to_bytes(19, "big")


def entry(n: int, *, sequence: int | None = None, weight: int = 1) -> BlockIndexEntry:
    return BlockIndexEntry(
        hash=h(n),
        parent=h(n - 1),
        height=n,
        timestamp_ms=1_700_000_000_000 + n,
        chain_weight=weight,
        sequence=n if sequence is None else sequence,
    )


def loc(txid: int, height: int, position: int) -> TxLocation:
    return TxLocation(txid=h(1000 + txid), block_hash=h(height), height=height, position=position)


StoreFactory = Callable[[], ChainStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory so a test may also reopen; every store it made is closed afterwards."""
    opened: list[ChainStore] = []

    def factory() -> ChainStore:
        store: ChainStore
        if request.param == "memory":
            store = MemoryStore()
        else:
            store = SqliteChainStore(tmp_path / "chain.db")
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> ChainStore:
    return make_store()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chain.db"


# --- the contract, for every store ---------------------------------------------------------


def test_empty_store_has_nothing(store: ChainStore) -> None:
    assert list(store.block_entries()) == []
    assert list(store.accounts()) == []
    assert store.get_block(h(1)) is None
    assert store.get_undo(h(1)) is None
    assert store.get_account(addr(1)) is None
    assert store.tip() is None
    assert store.get_meta("genesis") is None
    assert store.find_tx(h(1)) is None
    assert store.txs_by_address(addr(1), 10) == []


def test_block_round_trip(store: ChainStore) -> None:
    first = entry(1)
    second = BlockIndexEntry(h(2), h(1), 2, 5, 0, 2, invalid=True)
    store.write(WriteBatch(new_blocks=[(first, b"raw-1"), (second, b"")]))
    assert store.get_block(h(1)) == b"raw-1"
    assert store.get_block(h(2)) == b""
    assert list(store.block_entries()) == [first, second]


@pytest.mark.parametrize("weight", [0, 2**63, HUGE_WEIGHT, MAX_WEIGHT])
def test_huge_chain_weight_survives(store: ChainStore, weight: int) -> None:
    big = entry(1, weight=weight)
    store.write(WriteBatch(new_blocks=[(big, b"x")]))
    (loaded,) = store.block_entries()
    assert loaded.chain_weight == weight
    assert loaded == big


def test_block_entries_in_sequence_order(store: ChainStore) -> None:
    sequences = {1: 30, 2: 10, 3: 20, 4: 0}
    store.write(WriteBatch(new_blocks=[(entry(n, sequence=s), b"") for n, s in sequences.items()]))
    store.write(WriteBatch(new_blocks=[(entry(5, sequence=15), b"")]))
    assert [e.sequence for e in store.block_entries()] == [0, 10, 15, 20, 30]
    assert [e.hash for e in store.block_entries()] == [h(4), h(2), h(5), h(3), h(1)]


def test_updated_entry_replaces_and_keeps_block(store: ChainStore) -> None:
    original = entry(1, weight=HUGE_WEIGHT)
    store.write(WriteBatch(new_blocks=[(original, b"raw")]))
    store.write(WriteBatch(updated_entries=[original.marked_invalid()]))
    assert list(store.block_entries()) == [original.marked_invalid()]
    assert store.get_block(h(1)) == b"raw"


def test_updated_entry_after_new_block_in_same_batch_wins(store: ChainStore) -> None:
    original = entry(1)
    store.write(
        WriteBatch(new_blocks=[(original, b"raw")], updated_entries=[original.marked_invalid()])
    )
    assert list(store.block_entries()) == [original.marked_invalid()]


def test_undo_put_get_delete(store: ChainStore) -> None:
    store.write(WriteBatch(undo_put=[(h(1), b"undo-1"), (h(2), b"undo-2")]))
    assert store.get_undo(h(1)) == b"undo-1"
    store.write(WriteBatch(undo_deleted=[h(1), h(99)]))  # deleting a missing key is fine
    assert store.get_undo(h(1)) is None
    assert store.get_undo(h(2)) == b"undo-2"


def test_accounts_round_trip_update_and_index_order(store: ChainStore) -> None:
    records = [
        AccountRecord(addr(1), 500, 0, 2),
        AccountRecord(addr(2), INT64_MAX, INT64_MAX, 0),
        AccountRecord(addr(3), 0, 7, 1),
    ]
    store.write(WriteBatch(accounts_put=records))
    assert store.get_account(addr(2)) == records[1]
    assert [r.index for r in store.accounts()] == [0, 1, 2]
    assert list(store.accounts()) == [records[1], records[2], records[0]]

    spent = AccountRecord(addr(1), 400, 1, 2)
    store.write(WriteBatch(accounts_put=[spent]))
    assert store.get_account(addr(1)) == spent
    assert len(list(store.accounts())) == 3

    store.write(WriteBatch(accounts_deleted=[addr(3)]))
    assert store.get_account(addr(3)) is None
    assert list(store.accounts()) == [records[1], spent]


def test_deletions_apply_before_puts(store: ChainStore) -> None:
    old_account = AccountRecord(addr(1), 10, 0, 0)
    tx = loc(1, 5, 0)
    store.write(
        WriteBatch(
            accounts_put=[old_account],
            undo_put=[(h(1), b"old")],
            txs_indexed=[(tx, (addr(1), addr(2)))],
        )
    )
    new_account = AccountRecord(addr(1), 20, 1, 0)
    moved = loc(1, 6, 3)
    store.write(
        WriteBatch(
            accounts_deleted=[addr(1)],
            accounts_put=[new_account],
            undo_deleted=[h(1)],
            undo_put=[(h(1), b"new")],
            txs_unindexed=[tx.txid],
            txs_indexed=[(moved, (addr(1), addr(2)))],
        )
    )
    assert store.get_account(addr(1)) == new_account
    assert store.get_undo(h(1)) == b"new"
    assert store.find_tx(tx.txid) == moved
    assert store.txs_by_address(addr(2), 10) == [moved]


def test_account_deleted_and_index_reused_in_one_batch(store: ChainStore) -> None:
    """A reorg drops an account and a new one takes its leaf: deletions go first."""
    store.write(WriteBatch(accounts_put=[AccountRecord(addr(1), 10, 0, 0)]))
    newcomer = AccountRecord(addr(2), 5, 0, 0)
    store.write(WriteBatch(accounts_deleted=[addr(1)], accounts_put=[newcomer]))
    assert list(store.accounts()) == [newcomer]


def test_tip_and_meta(store: ChainStore) -> None:
    store.write(WriteBatch(tip=h(1), meta={"genesis": b"g", "version": b"\x01"}))
    assert store.tip() == h(1)
    store.write(WriteBatch(meta={"version": b"\x02"}))  # no tip: the tip stays
    assert store.tip() == h(1)
    assert store.get_meta("genesis") == b"g"
    assert store.get_meta("version") == b"\x02"
    store.write(WriteBatch(tip=h(2)))
    assert store.tip() == h(2)
    assert store.get_meta("missing") is None


def test_consensus_log_appends_in_order_and_drops_finished_heights(store: ChainStore) -> None:
    assert store.wal_records() == []
    store.write(WriteBatch(wal_append=[(5, b"a"), (5, b"b")]))
    store.write(WriteBatch(wal_append=[(6, b"c")], wal_keep_from=6))  # drop first, then add
    assert store.wal_records() == [(6, b"c")]
    store.write(WriteBatch(wal_append=[(6, b"d"), (7, b"e")]))
    assert store.wal_records() == [(6, b"c"), (6, b"d"), (7, b"e")]
    store.write(WriteBatch(wal_keep_from=7))
    assert store.wal_records() == [(7, b"e")]


def test_tx_index_add_find_and_remove(store: ChainStore) -> None:
    a, b, c = addr(1), addr(2), addr(3)
    t1, t2, t3 = loc(1, 1, 0), loc(2, 2, 0), loc(3, 2, 1)
    store.write(WriteBatch(txs_indexed=[(t1, (a, b)), (t2, (b, c)), (t3, (a, a))]))
    assert store.find_tx(t2.txid) == t2
    assert store.txs_by_address(a, 10) == [t3, t1]  # sender == recipient listed once
    assert store.txs_by_address(b, 10) == [t2, t1]
    assert store.txs_by_address(c, 10) == [t2]

    store.write(WriteBatch(txs_unindexed=[t2.txid, h(12345)]))  # unknown txid is ignored
    assert store.find_tx(t2.txid) is None
    assert store.txs_by_address(b, 10) == [t1]
    assert store.txs_by_address(c, 10) == []
    assert store.txs_by_address(a, 10) == [t3, t1]


def test_reindexing_a_tx_moves_it(store: ChainStore) -> None:
    """After a reorg the same txid may be indexed again at a new place: one row, new place."""
    a, b = addr(1), addr(2)
    old, new = loc(1, 5, 2), loc(1, 6, 0)
    store.write(WriteBatch(txs_indexed=[(old, (a, b))]))
    store.write(WriteBatch(txs_indexed=[(new, (a, b))]))
    assert store.find_tx(old.txid) == new
    assert store.txs_by_address(a, 10) == [new]
    assert store.txs_by_address(b, 10) == [new]


def test_txs_by_address_newest_first_with_limit(store: ChainStore) -> None:
    a = addr(1)
    # Written out of order, across batches: (height, position) decides, not arrival.
    batches = [[(3, 1), (1, 0)], [(3, 0), (2, 5), (2, 0)], [(4, 0)]]
    counter = 0
    for batch in batches:
        indexed: list[tuple[TxLocation, tuple[bytes, ...]]] = []
        for height, position in batch:
            counter += 1
            indexed.append((loc(counter, height, position), (a, addr(2))))
        store.write(WriteBatch(txs_indexed=indexed))
    newest = [(t.height, t.position) for t in store.txs_by_address(a, 100)]
    assert newest == [(4, 0), (3, 1), (3, 0), (2, 5), (2, 0), (1, 0)]
    assert [(t.height, t.position) for t in store.txs_by_address(a, 3)] == newest[:3]
    assert store.txs_by_address(a, 1)[0].height == 4
    assert store.txs_by_address(a, 0) == []
    assert store.txs_by_address(addr(9), 5) == []


def test_write_while_iterating(store: ChainStore) -> None:
    store.write(WriteBatch(new_blocks=[(entry(n), b"") for n in range(1, 4)]))
    store.write(WriteBatch(accounts_put=[AccountRecord(addr(n), n, 0, n) for n in range(3)]))
    seen = []
    for block in store.block_entries():
        store.write(WriteBatch(updated_entries=[block.marked_invalid()]))
        seen.append(block.hash)
    for record in store.accounts():
        store.write(WriteBatch(accounts_deleted=[record.address]))
    assert seen == [h(1), h(2), h(3)]
    assert all(block.invalid for block in store.block_entries())
    assert list(store.accounts()) == []


def test_empty_batch_changes_nothing(store: ChainStore) -> None:
    store.write(WriteBatch(new_blocks=[(entry(1), b"raw")], tip=h(1)))
    store.write(WriteBatch())
    assert store.tip() == h(1)
    assert list(store.block_entries()) == [entry(1)]


# --- SQLite only ---------------------------------------------------------------------------


def _full_batch() -> WriteBatch:
    return WriteBatch(
        new_blocks=[
            (entry(1, weight=HUGE_WEIGHT), b"block-1"),
            (entry(2, weight=MAX_WEIGHT), b"2"),
        ],
        updated_entries=[entry(2, weight=MAX_WEIGHT).marked_invalid()],
        accounts_put=[AccountRecord(addr(1), 100, 3, 1), AccountRecord(addr(2), 0, 0, 0)],
        undo_put=[(h(1), b"undo")],
        txs_indexed=[(loc(1, 1, 0), (addr(1), addr(2)))],
        tip=h(1),
        meta={"genesis": b"\x00" * 32},
    )


def _snapshot(store: ChainStore) -> tuple[object, ...]:
    return (
        list(store.block_entries()),
        [store.get_block(h(n)) for n in range(1, 4)],
        list(store.accounts()),
        [store.get_undo(h(n)) for n in range(1, 4)],
        store.find_tx(loc(1, 1, 0).txid),
        store.txs_by_address(addr(1), 10),
        store.txs_by_address(addr(2), 10),
        store.tip(),
        store.get_meta("genesis"),
    )


def test_sqlite_data_survives_reopen(db_path: Path) -> None:
    reference = MemoryStore()
    reference.write(_full_batch())
    with SqliteChainStore(db_path) as store:
        store.write(_full_batch())
    with SqliteChainStore(db_path, synchronous="NORMAL") as reopened:
        assert _snapshot(reopened) == _snapshot(reference)
        assert next(reopened.block_entries()).chain_weight == HUGE_WEIGHT


def test_sqlite_consensus_log_survives_reopen(db_path: Path) -> None:
    with SqliteChainStore(db_path) as store:
        store.write(WriteBatch(wal_append=[(3, b"vote"), (3, b"proposal")]))
    with SqliteChainStore(db_path) as reopened:
        assert reopened.wal_records() == [(3, b"vote"), (3, b"proposal")]


def _failing_batches() -> list[WriteBatch]:
    """Batches that break partway, each after earlier parts already hit the database."""
    base = WriteBatch(
        new_blocks=[(entry(3), b"block-3")],
        accounts_deleted=[addr(1)],
        undo_deleted=[h(1)],
        txs_unindexed=[loc(1, 1, 0).txid],
        undo_put=[(h(3), b"undo-3")],
        tip=h(3),
        meta={"genesis": b"changed"},
    )
    clash = [AccountRecord(addr(5), 1, 0, 7), AccountRecord(addr(6), 1, 0, 7)]
    too_heavy = [entry(1, weight=HUGE_WEIGHT).marked_invalid(), entry(3, weight=2**256)]
    too_rich = [AccountRecord(addr(5), 2**64, 0, 7)]
    return [
        replace(base, accounts_put=clash),
        replace(base, updated_entries=too_heavy),
        replace(base, accounts_put=too_rich),
    ]


@pytest.mark.parametrize("case", range(3), ids=["index-clash", "weight-overflow", "int64"])
def test_sqlite_failed_batch_leaves_nothing(db_path: Path, case: int) -> None:
    reference = MemoryStore()
    reference.write(_full_batch())
    with SqliteChainStore(db_path) as store:
        store.write(_full_batch())
        with pytest.raises((StoreError, OverflowError)):
            store.write(_failing_batches()[case])
        assert _snapshot(store) == _snapshot(reference)
        # The connection is not left inside a transaction: the next batch commits.
        store.write(WriteBatch(tip=h(2)))
        assert store.tip() == h(2)
    with SqliteChainStore(db_path) as reopened:
        assert reopened.get_block(h(3)) is None
        assert reopened.tip() == h(2)


class BoomError(Exception):
    pass


def test_sqlite_exception_midway_rolls_back(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-SQLite error between two puts propagates as-is and undoes the first put."""
    real_entry_row = sqlite_module._entry_row
    calls = 0

    def second_call_fails(block: BlockIndexEntry) -> tuple[object, ...]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise BoomError
        return real_entry_row(block)

    with SqliteChainStore(db_path) as store:
        store.write(_full_batch())
        before = _snapshot(store)
        monkeypatch.setattr(sqlite_module, "_entry_row", second_call_fails)
        batch = WriteBatch(
            accounts_deleted=[addr(1)],
            new_blocks=[(entry(3), b"block-3"), (entry(4), b"block-4")],
        )
        with pytest.raises(BoomError):
            store.write(batch)
        assert calls == 2
        assert _snapshot(store) == before
        assert store.get_block(h(3)) is None


def test_sqlite_failure_just_before_commit_rolls_back(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SqliteChainStore(db_path) as store:
        store.write(_full_batch())
        before = _snapshot(store)
        real_apply = SqliteChainStore._apply

        def apply_then_fail(conn: sqlite3.Connection, batch: WriteBatch) -> None:
            real_apply(conn, batch)
            raise BoomError

        monkeypatch.setattr(SqliteChainStore, "_apply", staticmethod(apply_then_fail))
        with pytest.raises(BoomError):
            store.write(WriteBatch(accounts_deleted=[addr(1)], tip=h(9)))
        assert _snapshot(store) == before


def test_sqlite_reindex_replaces_address_set_and_unindex_leaves_no_rows(db_path: Path) -> None:
    """Chosen semantics (MemoryStore keeps stale per-address entries here): replace."""
    a, b, c = addr(1), addr(2), addr(3)
    tx = loc(1, 5, 0)
    with SqliteChainStore(db_path) as store:
        store.write(WriteBatch(txs_indexed=[(tx, (a, b))]))
        store.write(WriteBatch(txs_indexed=[(tx, (b, c))]))
        assert store.txs_by_address(a, 10) == []
        assert store.txs_by_address(c, 10) == [tx]
        store.write(WriteBatch(txs_unindexed=[tx.txid]))
        conn = store._conn
        assert conn is not None
        assert conn.execute("SELECT count(*) FROM tx_addresses").fetchone()[0] == 0


def test_sqlite_garbage_file_is_store_error(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database, just some bytes that go on" * 100)
    with pytest.raises(StoreError, match="not a usable meshchain store"):
        SqliteChainStore(db_path)


def test_sqlite_foreign_database_is_refused(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a meshchain store"):
        SqliteChainStore(db_path)


def test_sqlite_newer_schema_is_refused(db_path: Path) -> None:
    SqliteChainStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="schema version"):
        SqliteChainStore(db_path)


@pytest.mark.parametrize("mode", ["OFF", "EXTRA", "", "FULL; DROP TABLE meta"])
def test_sqlite_rejects_unknown_synchronous(db_path: Path, mode: str) -> None:
    with pytest.raises((ValueError, StoreError)):
        SqliteChainStore(db_path, synchronous=mode)


@pytest.mark.parametrize(("mode", "level"), [("FULL", 2), ("NORMAL", 1), ("normal", 1)])
def test_sqlite_pragmas(db_path: Path, mode: str, level: int) -> None:
    with SqliteChainStore(db_path, synchronous=mode) as store:
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_sqlite_close_is_idempotent_and_blocks_use(db_path: Path) -> None:
    store = SqliteChainStore(db_path)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.tip()
    with pytest.raises(StoreError, match="closed"):
        store.write(WriteBatch(tip=h(1)))


def test_sqlite_reads_see_writes_of_another_connection(db_path: Path) -> None:
    """Two handles on one file (node and an inspecting CLI) see each other's commits."""
    with SqliteChainStore(db_path) as writer, SqliteChainStore(db_path) as reader:
        writer.write(_full_batch())
        assert reader.tip() == h(1)
        assert reader.get_block(h(1)) == b"block-1"


def test_sqlite_without_tx_index_stores_blocks_but_no_index(db_path: Path) -> None:
    """`[storage] tx_index = false`: lookups say so, and the index never silently
    comes back incomplete."""
    tx = loc(1, 5, 0)
    with SqliteChainStore(db_path, tx_index=False) as store:
        store.write(WriteBatch(txs_indexed=[(tx, (addr(1), addr(2)))], meta={"k": b"v"}))
        assert store.get_meta("k") == b"v"
        with pytest.raises(StoreError, match="no transaction index"):
            store.find_tx(tx.txid)
        with pytest.raises(StoreError, match="no transaction index"):
            store.txs_by_address(addr(1), 10)
        store.write(WriteBatch(txs_unindexed=[tx.txid]))
        conn = store._conn
        assert conn is not None
        assert conn.execute("SELECT count(*) FROM txs").fetchone()[0] == 0
    with pytest.raises(StoreError, match="without its transaction index"):
        SqliteChainStore(db_path)
    SqliteChainStore(db_path, tx_index=False).close()


def test_sqlite_indexes_a_batch_of_txs_as_one_statement_each_would(db_path: Path) -> None:
    """The batched index write keeps the last location of a txid listed twice."""
    a, b, c = addr(1), addr(2), addr(3)
    first, moved, other = loc(1, 5, 0), loc(1, 6, 3), loc(2, 6, 4)
    with SqliteChainStore(db_path) as store:
        store.write(WriteBatch(txs_indexed=[(first, (a, b)), (other, (c,)), (moved, (b, c))]))
        assert store.find_tx(first.txid) == moved
        assert store.txs_by_address(a, 10) == []
        assert store.txs_by_address(c, 10) == [other, moved]  # newest first


def test_a_version_1_store_is_migrated_and_keeps_its_data(db_path: Path) -> None:
    with SqliteChainStore(db_path) as store:
        store.write(_full_batch())
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TABLE consensus_wal")  # what a store made before version 2 lacks
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    reference = MemoryStore()
    reference.write(_full_batch())
    with SqliteChainStore(db_path) as reopened:
        assert _snapshot(reopened) == _snapshot(reference)
        reopened.write(WriteBatch(wal_append=[(1, b"vote")], meta={"x": b"y"}))
        assert reopened.wal_records() == [(1, b"vote")]
        assert reopened._conn is not None
        assert reopened._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

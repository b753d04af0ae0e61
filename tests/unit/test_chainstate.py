from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from meshchain.chainkit import KIT_BLOCK_INTERVAL_MS, ChainKit
from meshchain.core.chain.block import Block, block_hash, transactions_root
from meshchain.core.chain.chainstate import MAX_ORPHAN_BLOCKS, AddBlockResult, ChainState
from meshchain.core.chain.tx import VerifiedTx, compute_txid, verify_transaction
from meshchain.core.crypto.keys import SecretKey, SignatureVerifier
from meshchain.core.store import MemoryStore
from meshchain.core.wire.codec import encode
from meshchain.errors import RejectCode, StoreError
from meshchain.storage.sqlite import SqliteChainStore

KIT = ChainKit(seed=5, accounts=3)


def transfers(chain: ChainState, count: int, sender: int = 0, amount: int = 10) -> list[VerifiedTx]:
    nonce = chain.ledger.account_nonce(KIT.address(sender))
    return [
        verify_transaction(
            KIT.transfer(chain, sender, 1, amount, 2, nonce + i), SignatureVerifier()
        )
        for i in range(count)
    ]


def grow(
    chain: ChainState,
    blocks: int,
    txs: int = 1,
    offset_ms: int = KIT_BLOCK_INTERVAL_MS,
    sender: int = 0,
) -> list[Block]:
    made = []
    for _ in range(blocks):
        block = KIT.next_block(chain, transfers(chain, txs, sender), parent_offset_ms=offset_ms)
        update = chain.add_block(block, KIT.now_after(block))
        assert update.result is AddBlockResult.CONNECTED, update
        made.append(block)
    return made


def reseal(block: Block, **changes: object) -> Block:
    header = msgspec.structs.replace(block.header, consensus=b"", **changes)
    return Block(KIT.engine.seal(header, KIT.authority), block.transactions)


def test_extending_the_chain_indexes_transactions() -> None:
    chain = KIT.chain()
    blocks = grow(chain, 3, txs=2)
    assert chain.height == 3
    assert chain.tip_hash == block_hash(blocks[-1])
    for height, block in enumerate(blocks, start=1):
        for position, tx in enumerate(block.transactions):
            location = chain.store.find_tx(compute_txid(tx.body))
            assert location is not None
            assert (location.height, location.position) == (height, position)
    assert chain.ledger.total_balance() == chain.ledger.expected_supply()
    assert len(chain.store.txs_by_address(KIT.address(1), 10)) == 6


def test_a_block_seen_twice_is_a_duplicate() -> None:
    chain = KIT.chain()
    (block,) = grow(chain, 1)
    assert chain.add_block(block, KIT.now_after(block)).result is AddBlockResult.DUPLICATE


def test_heavier_branch_wins_and_the_reorg_is_exact() -> None:
    main, rival = KIT.chain(), KIT.chain()
    old = grow(main, 2, sender=0)
    new = grow(rival, 3, sender=1, offset_ms=2 * KIT_BLOCK_INTERVAL_MS)
    results = [main.add_block(b, KIT.now_after(b)) for b in new]
    assert [u.result for u in results] == [
        AddBlockResult.SIDE_BRANCH,
        AddBlockResult.SIDE_BRANCH,
        AddBlockResult.REORGANIZED,
    ]
    reorg = results[-1]
    assert [block_hash(b) for b, _ in reorg.disconnected] == [block_hash(b) for b in old[::-1]]
    assert [block_hash(b) for b, _ in reorg.connected] == [block_hash(b) for b in new]
    assert main.tip_hash == rival.tip_hash
    assert main.ledger.state_root() == rival.ledger.state_root()
    assert list(main.ledger.records()) == list(rival.ledger.records())
    for block in old:
        assert main.store.find_tx(compute_txid(block.transactions[0].body)) is None
    assert main.ledger.total_balance() == main.ledger.expected_supply()


def test_equal_weight_keeps_the_first_seen_tip() -> None:
    main, rival = KIT.chain(), KIT.chain()
    grow(main, 2, sender=0)
    tip = main.tip_hash
    for block in grow(rival, 2, sender=1, offset_ms=3 * KIT_BLOCK_INTERVAL_MS):
        assert main.add_block(block, KIT.now_after(block)).result is AddBlockResult.SIDE_BRANCH
    assert main.tip_hash == tip


def test_bad_state_root_is_invalid_and_so_are_its_children() -> None:
    chain = KIT.chain()
    grow(chain, 1)
    good = KIT.next_block(chain, transfers(chain, 1))
    bad = reseal(good, state_root=bytes(32))
    update = chain.add_block(bad, KIT.now_after(bad))
    assert update.result is AddBlockResult.INVALID
    assert update.error is not None
    assert update.error.code is RejectCode.BAD_STATE_ROOT
    assert chain.height == 1
    child = reseal(
        bad,
        height=3,
        parent=block_hash(bad),
        timestamp_ms=bad.header.timestamp_ms + KIT_BLOCK_INTERVAL_MS,
    )
    child_update = chain.add_block(child, KIT.now_after(child))
    assert child_update.result is AddBlockResult.INVALID
    assert child_update.error is not None
    assert child_update.error.code is RejectCode.INVALID_ANCESTOR
    # The honest block at the same height still connects.
    assert chain.add_block(good, KIT.now_after(good)).result is AddBlockResult.CONNECTED


def test_a_reorg_that_meets_an_invalid_block_falls_back_to_the_old_chain() -> None:
    main, rival = KIT.chain(), KIT.chain()
    grow(main, 2, sender=0)
    tip, root = main.tip_hash, main.ledger.state_root()
    branch = grow(rival, 2, sender=1, offset_ms=2 * KIT_BLOCK_INTERVAL_MS)
    # A third block with a wrong state root makes the branch heavier but invalid.
    forged = reseal(KIT.next_block(rival, transfers(rival, 1, sender=1)), state_root=bytes(32))
    for block in branch:
        assert main.add_block(block, KIT.now_after(block)).result is AddBlockResult.SIDE_BRANCH
    update = main.add_block(forged, KIT.now_after(forged))
    assert update.result is AddBlockResult.INVALID
    assert main.tip_hash == tip
    assert main.ledger.state_root() == root
    assert update.connected == []
    assert update.disconnected == []
    entry = main.entry(block_hash(forged))
    assert entry is not None
    assert entry.invalid


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda b: reseal(b, chain_id=bytes(32)), RejectCode.WRONG_CHAIN),
        (lambda b: reseal(b, tx_root=bytes(32)), RejectCode.BAD_MERKLE_ROOT),
        (lambda b: reseal(b, version=9), RejectCode.BAD_VERSION),
        (lambda b: reseal(b, height=5), RejectCode.BAD_HEIGHT),
        (
            lambda b: Block(msgspec.structs.replace(b.header, consensus=bytes(64)), b.transactions),
            RejectCode.BAD_CONSENSUS,
        ),
        (
            lambda b: Block(b.header, b.transactions + b.transactions[:1]),
            RejectCode.BAD_MERKLE_ROOT,
        ),
        (lambda b: reseal(b, timestamp_ms=b.header.timestamp_ms - 1), RejectCode.BAD_TIMESTAMP),
    ],
)
def test_tampered_blocks_are_rejected_with_a_reason(tamper: object, code: RejectCode) -> None:
    chain = KIT.chain()
    grow(chain, 1)
    block = KIT.next_block(chain, transfers(chain, 2))
    update = chain.add_block(tamper(block), KIT.now_after(block))  # type: ignore[operator]
    assert update.result is AddBlockResult.INVALID
    assert update.error is not None
    assert update.error.code is code
    assert chain.height == 1


def test_a_block_signed_by_a_stranger_is_rejected() -> None:
    chain = KIT.chain()
    block = KIT.next_block(chain, [])
    stranger = SecretKey.generate()
    header = msgspec.structs.replace(block.header, consensus=stranger.sign(b"x" * 32))
    update = chain.add_block(Block(header, []), KIT.now_after(block))
    assert update.error is not None
    assert update.error.code is RejectCode.BAD_CONSENSUS


def test_a_block_from_the_future_waits_until_its_time() -> None:
    chain = KIT.chain()
    block = KIT.next_block(chain, [], parent_offset_ms=120_000)
    early = block.header.timestamp_ms / 1000 - 60
    update = chain.add_block(block, early)
    assert update.error is not None
    assert update.error.code is RejectCode.BAD_TIMESTAMP
    assert not chain.has_block(block_hash(block))
    assert chain.add_block(block, KIT.now_after(block)).result is AddBlockResult.CONNECTED


def test_orphans_are_adopted_when_their_parent_arrives() -> None:
    source = KIT.chain()
    first, second, third = grow(source, 3)
    chain = KIT.chain()
    now = KIT.now_after(third)
    assert chain.add_block(third, now).result is AddBlockResult.ORPHAN
    assert chain.add_block(second, now).result is AddBlockResult.ORPHAN
    update = chain.add_block(first, now)
    assert update.result is AddBlockResult.CONNECTED
    assert update.adopted_orphans == [block_hash(second), block_hash(third)]
    assert [block_hash(b) for b, _ in update.connected] == [
        block_hash(b) for b in (first, second, third)
    ]
    assert chain.tip_hash == source.tip_hash
    assert chain.orphan_count == 0


def test_the_orphan_pool_is_bounded() -> None:
    chain = KIT.chain()
    base = KIT.next_block(chain, [])
    for i in range(MAX_ORPHAN_BLOCKS + 10):
        orphan = reseal(base, parent=i.to_bytes(32, "big"), height=5)
        assert chain.add_block(orphan, KIT.now_after(orphan)).result is AddBlockResult.ORPHAN
    assert chain.orphan_count == MAX_ORPHAN_BLOCKS


def test_the_orphan_pool_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    import meshchain.core.chain.chainstate as chainstate

    chain = KIT.chain()
    base = KIT.next_block(chain, transfers(chain, 3))
    size = len(encode(base))
    monkeypatch.setattr(chainstate, "MAX_ORPHAN_BYTES", 5 * size)
    for i in range(8):
        orphan = reseal(base, parent=i.to_bytes(32, "big"), height=5)
        chain.add_block(orphan, KIT.now_after(orphan))
    assert chain.orphan_count == 5
    assert chain.orphan_bytes == 5 * size


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_reopening_the_store_restores_tip_state_and_indexes(tmp_path: Path, backend: str) -> None:
    store = MemoryStore() if backend == "memory" else SqliteChainStore(tmp_path / "c.sqlite")
    main, rival = KIT.chain(store), KIT.chain()
    grow(main, 2, sender=0)
    for block in grow(rival, 3, sender=1, offset_ms=2 * KIT_BLOCK_INTERVAL_MS):
        main.add_block(block, KIT.now_after(block))
    if backend == "sqlite":
        store.close()
        store = SqliteChainStore(tmp_path / "c.sqlite")
    reopened = KIT.chain(store)
    assert reopened.tip_hash == rival.tip_hash
    assert reopened.height == 3
    assert reopened.ledger.state_root() == rival.ledger.state_root()
    assert reopened.ledger.minted == rival.ledger.minted
    assert reopened.ledger.burnt == rival.ledger.burnt
    grow(reopened, 1, sender=2)
    assert reopened.height == 4


def test_a_store_of_another_chain_is_refused() -> None:
    store = MemoryStore()
    KIT.chain(store)
    with pytest.raises(StoreError, match="another chain"):
        ChainKit(seed=99).chain(store)


def test_build_block_skips_transactions_that_do_not_apply() -> None:
    chain = KIT.chain()
    good = transfers(chain, 2)
    broke = verify_transaction(KIT.transfer(chain, 2, 1, 10**15, 1, 0), SignatureVerifier())
    gap = verify_transaction(KIT.transfer(chain, 1, 0, 1, 1, 7), SignatureVerifier())
    block = KIT.next_block(chain, [good[0], broke, gap, good[1]])
    assert [compute_txid(tx.body) for tx in block.transactions] == [v.txid for v in good]
    assert chain.add_block(block, KIT.now_after(block)).result is AddBlockResult.CONNECTED


class CountingVerifier(SignatureVerifier):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        self.calls += 1
        return super().verify(public_key, message, signature)


def test_transactions_verified_before_are_not_verified_again() -> None:
    verifier = CountingVerifier()
    chain = ChainState(KIT.genesis, KIT.engine, MemoryStore(), verifier)
    known = {vtx.txid: vtx for vtx in transfers(chain, 3)}
    chain.verified_lookup = known.get
    block = KIT.next_block(chain, list(known.values()))
    verifier.calls = 0
    assert chain.add_block(block, KIT.now_after(block)).result is AddBlockResult.CONNECTED
    assert verifier.calls == 0  # all three were known (the PoA seal has its own verifier)
    chain.verified_lookup = None
    second = KIT.next_block(chain, transfers(chain, 3))
    chain.add_block(second, KIT.now_after(second))
    assert verifier.calls == 3  # unknown transactions are verified


def test_a_checked_candidate_is_connected_without_verifying_its_signatures_again() -> None:
    """A BFT proposal is checked in full, then committed: one check per signature."""
    verifier = CountingVerifier()
    chain = ChainState(KIT.genesis, KIT.engine, MemoryStore(), verifier)
    block = KIT.next_block(chain, transfers(chain, 3))
    other = KIT.next_block(chain, transfers(chain, 2, sender=1))
    now = KIT.now_after(block)
    chain.check_candidate(block, now)
    assert verifier.calls == 3
    chain.check_candidate(other, now)  # the last candidate checked is the one kept
    chain.check_candidate(block, now)
    verifier.calls = 0
    assert chain.add_block(block, now).result is AddBlockResult.CONNECTED
    assert verifier.calls == 0
    assert chain.ledger.state_root() == block.header.state_root


def test_a_checked_candidate_is_not_trusted_for_another_block() -> None:
    verifier = CountingVerifier()
    chain = ChainState(KIT.genesis, KIT.engine, MemoryStore(), verifier)
    block = KIT.next_block(chain, transfers(chain, 3))
    other = KIT.next_block(chain, transfers(chain, 2, sender=1))
    chain.check_candidate(block, KIT.now_after(block))
    verifier.calls = 0
    assert chain.add_block(other, KIT.now_after(other)).result is AddBlockResult.CONNECTED
    assert verifier.calls == 2


def test_a_known_txid_with_another_signature_is_still_verified() -> None:
    chain = KIT.chain()
    (vtx,) = transfers(chain, 1)
    chain.verified_lookup = {vtx.txid: vtx}.get
    honest = KIT.next_block(chain, [vtx])
    forged_tx = msgspec.structs.replace(vtx.tx, signature=bytes(64))
    forged = reseal(honest, tx_root=transactions_root([forged_tx]))
    forged = Block(forged.header, [forged_tx])
    update = chain.add_block(forged, KIT.now_after(forged))
    assert update.error is not None
    assert update.error.code is RejectCode.BAD_SIGNATURE

"""The block tree, fork choice by cumulative weight, exact reorgs, and a bounded orphan pool.

Every stored block has an index entry in memory (as Bitcoin keeps its block index).
The best chain is the valid tip with the most cumulative weight; on a tie the block seen
first stays best. Each connect or disconnect is one atomic store write, so a crash leaves
the store at some valid tip, and `activate_best_chain` resumes from there on restart.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec

from meshchain.core.chain.block import (
    BLOCK_CODEC,
    BLOCK_VERSION,
    Block,
    BlockHeader,
    block_hash,
    transactions_root,
)
from meshchain.core.chain.genesis import Genesis, chain_id, genesis_block, genesis_ledger
from meshchain.core.chain.ledger import UNDO_CODEC, BlockEconomics, Ledger
from meshchain.core.chain.tx import (
    Transaction,
    VerifiedTx,
    compute_txid,
    reverified_from_chain,
    txid_of,
    verify_transaction,
)
from meshchain.core.chain.validation import check_block
from meshchain.core.consensus.engine import ConsensusEngine
from meshchain.core.crypto.keys import SignatureVerifier
from meshchain.core.store import BlockIndexEntry, ChainStore, TxLocation, WriteBatch
from meshchain.core.wire.codec import encode
from meshchain.errors import RejectCode, StoreError, ValidationError

# Blocks whose parent we lack, held until it arrives. Bitcoin kept 750 before
# headers-first sync made orphans rare; each may be 4 MB, so we keep fewer.
MAX_ORPHAN_BLOCKS = 64
# ...and at most this many encoded bytes of them (eight full 4 MB blocks).
MAX_ORPHAN_BYTES = 32 * 1024 * 1024
# Bitcoin: a block's time must exceed the median of the previous 11 blocks' times.
MEDIAN_TIME_SPAN = 11
META_CHAIN_ID = "chain_id"
META_MINTED = "minted"
META_BURNT = "burnt"


class AddBlockResult(enum.Enum):
    CONNECTED = "connected"  # extended the best chain
    REORGANIZED = "reorganized"  # the best chain switched branches
    SIDE_BRANCH = "side_branch"  # stored; its branch is not the best
    ORPHAN = "orphan"  # parent unknown; held in the orphan pool
    DUPLICATE = "duplicate"
    INVALID = "invalid"


@dataclass(slots=True)
class ChainUpdate:
    """What adding one block did, for the mempool, relay and subscribers."""

    result: AddBlockResult
    block_hash: bytes
    error: ValidationError | None = None
    connected: list[tuple[Block, list[VerifiedTx]]] = field(default_factory=list)
    disconnected: list[tuple[Block, list[VerifiedTx]]] = field(default_factory=list)
    adopted_orphans: list[bytes] = field(default_factory=list)


def _net_effect(update: ChainUpdate) -> ChainUpdate:
    """Drop blocks both disconnected and connected in one update (a reorg that failed
    and went back): listeners see only what changed between the old and the new tip."""
    connected = {block_hash(block) for block, _ in update.connected}
    both = connected & {block_hash(block) for block, _ in update.disconnected}
    if both:
        update.connected = [c for c in update.connected if block_hash(c[0]) not in both]
        update.disconnected = [d for d in update.disconnected if block_hash(d[0]) not in both]
    return update


class _HeaderOnly(msgspec.Struct, array_like=True):
    header: BlockHeader
    transactions: msgspec.Raw


_header_only_decoder = msgspec.msgpack.Decoder(_HeaderOnly)


def check_header_rules(
    engine: ConsensusEngine,
    header: BlockHeader,
    parent: BlockHeader,
    median_time_past_ms: int,
    now: float,
) -> None:
    """The rules a header obeys on top of its parent: the next height, a timestamp after
    the parent's and the median time past and not too far ahead of `now`, and the
    engine's seal. Sync checks headers with this before it has their blocks."""
    if header.height != parent.height + 1:
        raise ValidationError(
            RejectCode.BAD_HEIGHT, f"height {header.height} after parent {parent.height}"
        )
    if header.timestamp_ms < parent.timestamp_ms:
        raise ValidationError(RejectCode.BAD_TIMESTAMP, "timestamp before the parent's")
    if header.timestamp_ms > int(now * 1000) + engine.max_future_drift_ms:
        raise ValidationError(RejectCode.BAD_TIMESTAMP, "timestamp too far in the future")
    if header.timestamp_ms <= median_time_past_ms:
        raise ValidationError(
            RejectCode.BAD_TIMESTAMP,
            f"timestamp {header.timestamp_ms} is not after the median of the last "
            f"{MEDIAN_TIME_SPAN} blocks ({median_time_past_ms})",
        )
    engine.check_header(header, parent)


def _int_meta(value: int) -> bytes:
    return value.to_bytes(16, "big")


class ChainState:
    def __init__(
        self,
        genesis: Genesis,
        engine: ConsensusEngine,
        store: ChainStore,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        self.genesis = genesis
        self.chain_id = chain_id(genesis)
        self.engine = engine
        self.store = store
        self.verifier = verifier or SignatureVerifier()
        # Where verified transactions can be found by txid (the node's mempool), so a
        # block of transactions we already checked does not cost their signatures again.
        self.verified_lookup: Callable[[bytes], VerifiedTx | None] | None = None
        self.ledger = genesis_ledger(genesis)
        self._entries: dict[bytes, BlockIndexEntry] = {}
        self._headers: dict[bytes, BlockHeader] = {}
        self._children: dict[bytes, list[bytes]] = {}
        self._tips: set[bytes] = set()
        self._main: list[bytes] = []
        self._orphans: OrderedDict[bytes, tuple[Block, int]] = OrderedDict()
        self._orphan_bytes = 0
        self._sequence = 0
        self._connect_meta: tuple[bytes, dict[str, bytes]] | None = None
        # The last candidate that passed `check_candidate`, with its verified transactions:
        # a BFT proposal is checked, then committed, and its signatures need checking once.
        self._checked: tuple[bytes, list[VerifiedTx]] | None = None
        if store.tip() is None:
            self._initialize()
        else:
            self._load()

    # --- start-up -------------------------------------------------------------------

    def _initialize(self) -> None:
        block = genesis_block(self.genesis, self.ledger)  # still the genesis state here
        raw = encode(block)
        entry = BlockIndexEntry(
            block_hash(block),
            block.header.parent,
            0,
            block.header.timestamp_ms,
            self.engine.block_weight(block.header),
            0,
        )
        self._remember(entry, block.header)
        self._main = [entry.hash]
        self._sequence = 1
        self.store.write(
            WriteBatch(
                new_blocks=[(entry, raw)],
                accounts_put=list(self.ledger.records()),
                tip=entry.hash,
                meta={
                    META_CHAIN_ID: self.chain_id,
                    META_MINTED: _int_meta(0),
                    META_BURNT: _int_meta(0),
                },
            )
        )

    def _load(self) -> None:
        stored_id = self.store.get_meta(META_CHAIN_ID)
        if stored_id != self.chain_id:
            raise StoreError("the data directory holds another chain (genesis differs)")
        for entry in self.store.block_entries():
            raw = self.store.get_block(entry.hash)
            if raw is None:
                raise StoreError(f"block {entry.hash.hex()} is indexed but missing")
            self._remember(entry, _header_only_decoder.decode(raw).header)
            self._sequence = max(self._sequence, entry.sequence + 1)
        tip = self.store.tip()
        assert tip is not None
        if tip not in self._entries:
            raise StoreError("the stored tip is not in the block index")
        self._main = list(reversed([entry.hash for entry in self._ancestry(tip)]))
        self.ledger = Ledger(self.ledger.allocated)
        minted = int.from_bytes(self.store.get_meta(META_MINTED) or b"", "big")
        burnt = int.from_bytes(self.store.get_meta(META_BURNT) or b"", "big")
        self.ledger.load(self.store.accounts(), minted, burnt)
        if self.ledger.state_root() != self.tip_header.state_root:
            raise StoreError("stored accounts do not match the tip's state root")
        self.activate_best_chain()

    def _remember(self, entry: BlockIndexEntry, header: BlockHeader) -> None:
        self._entries[entry.hash] = entry
        self._headers[entry.hash] = header
        if entry.height > 0:
            self._children.setdefault(entry.parent, []).append(entry.hash)
            self._tips.discard(entry.parent)
        if not entry.invalid:
            self._tips.add(entry.hash)

    # --- reading -------------------------------------------------------------------

    @property
    def height(self) -> int:
        return len(self._main) - 1

    @property
    def tip_hash(self) -> bytes:
        return self._main[-1]

    @property
    def tip_header(self) -> BlockHeader:
        return self._headers[self._main[-1]]

    @property
    def finalized_height(self) -> int | None:
        """The highest block that can never be reverted, by the engine's rule; None
        when the engine has no finality (the API's "last finality")."""
        depth = self.engine.finality_depth
        return None if depth is None else max(0, self.height - depth)

    @property
    def tip_entry(self) -> BlockIndexEntry:
        return self._entries[self._main[-1]]

    def hash_at(self, height: int) -> bytes | None:
        return self._main[height] if 0 <= height < len(self._main) else None

    def header(self, block_hash_: bytes) -> BlockHeader | None:
        return self._headers.get(block_hash_)

    def entry(self, block_hash_: bytes) -> BlockIndexEntry | None:
        return self._entries.get(block_hash_)

    def block(self, block_hash_: bytes) -> Block | None:
        raw = self.store.get_block(block_hash_)
        return None if raw is None else BLOCK_CODEC.decode(raw)

    def is_main(self, block_hash_: bytes) -> bool:
        entry = self._entries.get(block_hash_)
        return entry is not None and self.hash_at(entry.height) == block_hash_

    def has_block(self, block_hash_: bytes) -> bool:
        return block_hash_ in self._entries or block_hash_ in self._orphans

    @property
    def orphan_count(self) -> int:
        return len(self._orphans)

    @property
    def orphan_bytes(self) -> int:
        return self._orphan_bytes

    def economics(self, header: BlockHeader) -> BlockEconomics:
        return BlockEconomics(
            header.beneficiary, self.genesis.block_reward, self.genesis.fee_burn_bps
        )

    def _ancestry(self, block_hash_: bytes) -> Iterator[BlockIndexEntry]:
        entry = self._entries[block_hash_]
        while True:
            yield entry
            if entry.height == 0:
                return
            entry = self._entries[entry.parent]

    # --- adding blocks -----------------------------------------------------------------

    def add_block(
        self,
        block: Block,
        now: float,
        raw: bytes | None = None,
        meta: dict[str, bytes] | None = None,
    ) -> ChainUpdate:
        """Validate, store and maybe connect a block; then adopt orphans that waited on it.

        `meta` is written in the same atomic step that connects this block (a BFT node
        keeps the newest block's commit certificate so, never apart from it)."""
        self._connect_meta = (block_hash(block), meta) if meta else None
        try:
            update = self._add_one(block, now, raw)
        finally:
            self._connect_meta = None
        return self._adopt_orphans(update, now)

    def _adopt_orphans(self, update: ChainUpdate, now: float) -> ChainUpdate:
        stored = update.result not in (AddBlockResult.DUPLICATE, AddBlockResult.ORPHAN) and (
            self._entries.get(update.block_hash) is not None
        )
        waiting = (
            [update.block_hash] if stored and update.result is not AddBlockResult.INVALID else []
        )
        while waiting:
            parent = waiting.pop()
            for orphan_hash, (orphan, size) in list(self._orphans.items()):
                if orphan.header.parent != parent:
                    continue
                del self._orphans[orphan_hash]
                self._orphan_bytes -= size
                adopted = self._add_one(orphan, now, None)
                if adopted.result is AddBlockResult.INVALID:
                    continue
                update.adopted_orphans.append(orphan_hash)
                update.disconnected.extend(adopted.disconnected)
                update.connected.extend(adopted.connected)
                waiting.append(orphan_hash)
        if update.result is AddBlockResult.SIDE_BRANCH and update.connected:
            update.result = AddBlockResult.REORGANIZED
        return _net_effect(update)

    def _add_one(self, block: Block, now: float, raw: bytes | None) -> ChainUpdate:
        header = block.header
        this_hash = block_hash(block)
        known = self._entries.get(this_hash)
        if known is not None or this_hash in self._orphans:
            if known is not None and known.invalid:
                error = ValidationError(RejectCode.INVALID_ANCESTOR, "block is known invalid")
                return ChainUpdate(AddBlockResult.INVALID, this_hash, error)
            return ChainUpdate(AddBlockResult.DUPLICATE, this_hash)
        if raw is None:
            raw = encode(block)
        try:
            check_block(block, self.chain_id, len(raw))
            parent = self._entries.get(header.parent)
            if parent is None:
                return self._hold_orphan(this_hash, block, len(raw))
            if parent.invalid:
                raise ValidationError(RejectCode.INVALID_ANCESTOR, "parent is invalid")
            self._check_header(header, parent, now)
        except ValidationError as error:
            return ChainUpdate(AddBlockResult.INVALID, this_hash, error)
        weight = parent.chain_weight + self.engine.block_weight(header)
        entry = BlockIndexEntry(
            this_hash, header.parent, header.height, header.timestamp_ms, weight, self._sequence
        )
        self._sequence += 1
        self.store.write(WriteBatch(new_blocks=[(entry, raw)]))
        self._remember(entry, header)
        before = self.tip_hash
        update = ChainUpdate(AddBlockResult.SIDE_BRANCH, this_hash)
        self.activate_best_chain(update, block)
        if self._entries[this_hash].invalid:
            update.result = AddBlockResult.INVALID
        elif self.is_main(this_hash):
            extended = self._headers[this_hash].parent == before
            update.result = AddBlockResult.CONNECTED if extended else AddBlockResult.REORGANIZED
        return update

    def _check_header(self, header: BlockHeader, parent: BlockIndexEntry, now: float) -> None:
        check_header_rules(
            self.engine,
            header,
            self._headers[parent.hash],
            self.median_time_past(parent.hash),
            now,
        )

    def median_time_past(self, block_hash_: bytes) -> int:
        """The median timestamp of a block and its ancestors, up to MEDIAN_TIME_SPAN of
        them (Bitcoin's GetMedianTimePast): a new child must be later than this."""
        times: list[int] = []
        entry = self._entries.get(block_hash_)
        while entry is not None and len(times) < MEDIAN_TIME_SPAN:
            times.append(entry.timestamp_ms)
            entry = self._entries.get(entry.parent) if entry.height > 0 else None
        times.sort()
        return times[len(times) // 2]

    def _hold_orphan(self, this_hash: bytes, block: Block, size: int) -> ChainUpdate:
        """Keep a block whose parent is unknown; the oldest orphans go first when full."""
        self._orphans[this_hash] = (block, size)
        self._orphan_bytes += size
        while len(self._orphans) > MAX_ORPHAN_BLOCKS or self._orphan_bytes > MAX_ORPHAN_BYTES:
            _, (_, evicted_size) = self._orphans.popitem(last=False)
            self._orphan_bytes -= evicted_size
        return ChainUpdate(AddBlockResult.ORPHAN, this_hash)

    # --- fork choice -------------------------------------------------------------------

    def _rank(self, block_hash_: bytes) -> tuple[int, int]:
        """Fork-choice order: more weight first, then the block that arrived earlier."""
        entry = self._entries[block_hash_]
        return entry.chain_weight, -entry.sequence

    def _best_tip(self) -> bytes:
        return max(self._tips, key=self._rank)

    def activate_best_chain(
        self, update: ChainUpdate | None = None, fresh: Block | None = None
    ) -> None:
        """Move the tip to the heaviest valid chain, one atomic step at a time."""
        update = update if update is not None else ChainUpdate(AddBlockResult.SIDE_BRANCH, b"")
        while True:
            best = self._best_tip()
            if self._rank(best) <= self._rank(self.tip_hash):
                return
            path: list[bytes] = []
            for entry in self._ancestry(best):
                if self.is_main(entry.hash):
                    break
                path.append(entry.hash)
            path.reverse()
            fork_height = self._entries[path[0]].height - 1
            while self.height > fork_height:
                update.disconnected.append(self._disconnect_tip())
            for step_hash in path:
                block = fresh if fresh is not None and block_hash(fresh) == step_hash else None
                if block is None:
                    block = self.block(step_hash)
                    assert block is not None
                try:
                    update.connected.append(self._connect(step_hash, block))
                except ValidationError as error:
                    update.error = error
                    self._mark_invalid(step_hash)
                    break

    def _connect(self, this_hash: bytes, block: Block) -> tuple[Block, list[VerifiedTx]]:
        header = block.header
        checked, self._checked = self._checked, None
        if checked is not None and checked[0] == this_hash:
            vtxs = checked[1]  # the same header, so the same transactions (its tx root)
        else:
            vtxs = [self._verified(tx) for tx in block.transactions]
        ledger = self.ledger
        undo = ledger.apply_block(vtxs, self.economics(header))
        if ledger.state_root() != header.state_root:
            ledger.undo_block(undo)
            ledger.state_root()
            raise ValidationError(RejectCode.BAD_STATE_ROOT, f"block {this_hash.hex()}")
        touched = [prior.address for prior in undo.prior]
        touched += ledger.newest_addresses(undo.created)
        batch = WriteBatch(
            accounts_put=[record for a in touched if (record := ledger.record(a)) is not None],
            undo_put=[(this_hash, UNDO_CODEC.encode(undo))],
            txs_indexed=[
                (
                    TxLocation(vtx.txid, this_hash, header.height, position),
                    (vtx.sender, vtx.tx.body.recipient),
                )
                for position, vtx in enumerate(vtxs)
            ],
            tip=this_hash,
            meta={META_MINTED: _int_meta(ledger.minted), META_BURNT: _int_meta(ledger.burnt)},
        )
        if self._connect_meta is not None and self._connect_meta[0] == this_hash:
            batch.meta.update(self._connect_meta[1])
        self.store.write(batch)
        self._main.append(this_hash)
        return block, vtxs

    def _verified(self, tx: Transaction) -> VerifiedTx:
        """A transaction verified before (in the mempool) is not verified again, as long
        as it is the very same transaction, signature included."""
        known = self.verified_lookup(txid_of(tx)) if self.verified_lookup else None
        if known is not None and known.tx == tx:
            return known
        return verify_transaction(tx, self.verifier)

    def _disconnect_tip(self) -> tuple[Block, list[VerifiedTx]]:
        this_hash = self._main[-1]
        block = self.block(this_hash)
        raw_undo = self.store.get_undo(this_hash)
        if block is None or raw_undo is None:
            raise StoreError(f"cannot disconnect {this_hash.hex()}: block or undo data missing")
        undo = UNDO_CODEC.decode(raw_undo)
        removed = self.ledger.undo_block(undo)
        self.ledger.state_root()
        restored = [record for p in undo.prior if (record := self.ledger.record(p.address))]
        self.store.write(
            WriteBatch(
                accounts_put=restored,
                accounts_deleted=removed,
                undo_deleted=[this_hash],
                txs_unindexed=[compute_txid(tx.body) for tx in block.transactions],
                tip=block.header.parent,
                meta={
                    META_MINTED: _int_meta(self.ledger.minted),
                    META_BURNT: _int_meta(self.ledger.burnt),
                },
            )
        )
        self._main.pop()
        return block, [reverified_from_chain(tx) for tx in block.transactions]

    def _mark_invalid(self, bad_hash: bytes) -> None:
        """Mark a block and all its descendants invalid; its parent becomes a tip again."""
        updated: list[BlockIndexEntry] = []
        pending = [bad_hash]
        while pending:
            current = pending.pop()
            entry = self._entries[current].marked_invalid()
            self._entries[current] = entry
            self._tips.discard(current)
            updated.append(entry)
            pending.extend(self._children.get(current, []))
        self._tips.add(self._entries[bad_hash].parent)
        self.store.write(WriteBatch(updated_entries=updated))

    # --- producing blocks --------------------------------------------------------------

    def check_candidate(self, block: Block, now: float) -> None:
        """Validate a block on the tip in full without storing it (a BFT proposal, which
        must not enter the block tree before it is committed); ValidationError if bad."""
        header = block.header
        check_block(block, self.chain_id, len(encode(block)))
        if header.parent != self.tip_hash:
            raise ValidationError(RejectCode.UNKNOWN_PARENT, "a candidate must extend the tip")
        self._check_header(header, self.tip_entry, now)
        vtxs = [self._verified(tx) for tx in block.transactions]
        undo = self.ledger.apply_block(vtxs, self.economics(header))
        root = self.ledger.state_root()
        self.ledger.undo_block(undo)
        self.ledger.state_root()
        if root != header.state_root:
            raise ValidationError(RejectCode.BAD_STATE_ROOT, f"candidate {block_hash(block).hex()}")
        self._checked = (block_hash(block), vtxs)

    def build_block(
        self,
        candidates: list[VerifiedTx],
        timestamp_ms: int,
        beneficiary: bytes,
        consensus: bytes | None = None,
    ) -> tuple[Block, list[VerifiedTx]]:
        """An unsealed block on the tip with those candidates that apply, in order;
        `consensus` fills the engine's field when the engine's template is not enough."""
        tip = self.tip_header
        ledger = self.ledger
        economics = BlockEconomics(
            beneficiary, self.genesis.block_reward, self.genesis.fee_burn_bps
        )
        try:
            undo = ledger.apply_block(candidates, economics)
            accepted = list(candidates)
        except ValidationError:
            accepted = self._applicable(candidates, beneficiary)
            undo = ledger.apply_block(accepted, economics)
        state_root = ledger.state_root()
        ledger.undo_block(undo)
        ledger.state_root()
        transactions = [vtx.tx for vtx in accepted]
        header = BlockHeader(
            version=BLOCK_VERSION,
            chain_id=self.chain_id,
            height=tip.height + 1,
            parent=self.tip_hash,
            timestamp_ms=max(timestamp_ms, self.median_time_past(self.tip_hash) + 1),
            tx_root=transactions_root(transactions),
            state_root=state_root,
            beneficiary=beneficiary,
            consensus=self.engine.template_consensus(tip) if consensus is None else consensus,
        )
        return Block(header, transactions), accepted

    def _applicable(self, candidates: list[VerifiedTx], beneficiary: bytes) -> list[VerifiedTx]:
        """The candidates that apply one after another, each tried once on the tip state."""
        no_reward = BlockEconomics(beneficiary, 0, 0)
        accepted: list[VerifiedTx] = []
        undos = []
        for vtx in candidates:
            try:
                undos.append(self.ledger.apply_block([vtx], no_reward))
                accepted.append(vtx)
            except ValidationError:
                continue
        for undo in reversed(undos):
            self.ledger.undo_block(undo)
        return accepted

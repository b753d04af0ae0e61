"""The transaction pool: verified transactions waiting for a block, bounded in size.

Accounts work as in Ethereum: a transaction can go into the next block only when its
nonce equals the sender's account nonce and the balance covers amount + fee. The pool
therefore keeps each sender's transactions keyed by nonce and, for a block template,
takes them strictly in nonce order, richest fee rate first across senders.

Policy, in one place:

* Admission: the nonce must be at least the account nonce and at most MAX_NONCE_GAP
  ahead of it (a small window of out-of-order arrivals is fine); the fee rate must reach
  the minimum; a sender holds at most MAX_PENDING_PER_SENDER transactions; and the
  balance must cover the amount + fee of *all* the sender's pending transactions with
  the new one, so every pending transaction stays affordable in sequence (geth checks
  the same total). A same-nonce transaction replaces the old one only when it pays
  REPLACEMENT_FEE_BUMP_PERCENT more in fee and has a higher fee rate.
* Eviction when full: a transaction can be mined no earlier than every lower nonce of its
  sender, so a sender's transactions are worth the lowest fee rate among them, and
  nothing if they do not start at the account nonce or have a gap. The sender with the
  lowest such score loses its highest-nonce transaction (evicting a lower nonce would
  strand the later ones). Ties go against the most recently changed sender, so an
  incoming transaction does not push out an equal one that came first. If the incoming
  transaction would be evicted, it is rejected with MEMPOOL_FULL and nothing changes.
* Expiry: a transaction older than the expiry goes, and so do the sender's later nonces,
  which could not be mined without it (geth drops an expired account's queue too).
* There is no child-pays-for-parent: a high fee does not pull a cheaper predecessor
  into a block, and it does not protect it from eviction either.

The chain id and other context-free rules are the caller's job, checked before `add`.
Sans-IO: time arrives as `now` (seconds); nothing here reads a clock.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import msgspec

from meshchain.core.chain.tx import Transaction, VerifiedTx
from meshchain.errors import RejectCode, ValidationError

# Bitcoin Core's default -maxmempool is 300 MB (for 4 MB blocks). Python objects cost
# several times a transaction's encoded size in memory, and our nodes run on small
# machines, so we keep 32 MiB: still 8 full blocks, ~200,000 minimal transactions.
DEFAULT_MAX_MEMPOOL_BYTES = 32 * 1024 * 1024
# geth's txpool.lifetime is 3 h (Bitcoin Core's -mempoolexpiry is 336 h with 10-minute
# blocks). With our faster blocks, a transaction unmined for 3 h is stuck, not waiting.
DEFAULT_MEMPOOL_EXPIRY = 3 * 60 * 60.0
# Fee units per encoded byte; Bitcoin Core's -minrelaytxfee is 1 sat/vB. It makes
# flooding the network cost something.
DEFAULT_MIN_FEE_RATE = 1.0
# geth keeps 16 executable (accountslots) + 64 future (accountqueue) slots per account;
# one limit of 64 keeps any single sender from filling the pool.
MAX_PENDING_PER_SENDER = 64
# How far ahead of the account nonce a transaction may be; the same as the per-sender
# limit, so a sender can use its whole allowance out of order, and no further.
MAX_NONCE_GAP = 64
# geth's txpool.pricebump: a replacement pays at least 10% more, so re-broadcasting
# replacements through the network is never free.
REPLACEMENT_FEE_BUMP_PERCENT = 10
# Stale heap entries (lazy deletion) tolerated beyond twice the live ones before a
# rebuild; rebuilding then costs O(1) amortised per push.
HEAP_SLACK = 1024
# Eviction score of a sender whose transactions cannot be mined now (they do not start
# at the account nonce, or have a gap): below any real fee rate, so they go first.
_NOT_EXECUTABLE = -1.0


class AccountView(Protocol):
    """Read access to account state at the chain tip; unknown accounts are 0 and 0."""

    def account_nonce(self, address: bytes) -> int: ...

    def account_balance(self, address: bytes) -> int: ...


class AddResult(enum.Enum):
    ADDED = 1
    REPLACED = 2  # took the place of the sender's transaction with the same nonce


class _Entry(msgspec.Struct, frozen=True, gc=False):
    """A pooled transaction; untracked by the garbage collector, as `VerifiedTx` is."""

    vtx: VerifiedTx
    added_at: float
    seq: int  # unique per admission: tells a live heap entry from a stale one

    @property
    def nonce(self) -> int:
        return self.vtx.tx.body.nonce


def tx_cost(vtx: VerifiedTx) -> int:
    """What the transaction takes from the sender's balance."""
    return vtx.tx.body.amount + vtx.tx.body.fee


class Mempool:
    """Pending transactions by id and by sender and nonce, bounded by `max_bytes`."""

    def __init__(
        self,
        accounts: AccountView,
        *,
        max_bytes: int = DEFAULT_MAX_MEMPOOL_BYTES,
        expiry_seconds: float = DEFAULT_MEMPOOL_EXPIRY,
        min_fee_rate: float = DEFAULT_MIN_FEE_RATE,
    ) -> None:
        if max_bytes <= 0 or expiry_seconds <= 0 or min_fee_rate < 0:
            raise ValueError("max_bytes and expiry_seconds must be positive, min_fee_rate >= 0")
        self._accounts = accounts
        self._max_bytes = max_bytes
        self._expiry = expiry_seconds
        self._min_fee_rate = min_fee_rate
        self._by_id: dict[bytes, _Entry] = {}
        self._by_sender: dict[bytes, dict[int, _Entry]] = {}
        self._bytes = 0
        self._seq = 0
        # (added_at, seq, txid); live while _by_id[txid].seq == seq.
        self._expiry_heap: list[tuple[float, int, bytes]] = []
        # (score, -token, sender), one live entry per sender: the one whose token matches
        # _tail_token[sender]. Negated tokens make ties pop the newest first. Senders
        # changed since the heap was last needed wait in _unscored, their tokens already
        # drawn: scores are pushed only when something must be evicted, not on every
        # admission of a pool far from full.
        self._evict_heap: list[tuple[float, int, bytes]] = []
        self._tail_token: dict[bytes, int] = {}
        self._unscored: dict[bytes, None] = {}
        # Per sender, kept by _insert and _remove so that admission costs O(1), not
        # O(pending): the summed amount + fee of its pooled transactions, and its
        # (lowest nonce, highest nonce, lowest fee rate), which a removal drops (the next
        # _score recomputes it) and an insertion extends.
        self._pending_cost: dict[bytes, int] = {}
        self._summary: dict[bytes, tuple[int, int, float]] = {}
        # Relay asks these for every transaction and every peer: the dict's own bound
        # methods, called from C, not through a Python method.
        self.has: Callable[[bytes], bool] = self._by_id.__contains__
        # Counts removals, for callers that cache what they found here (relay's answers
        # to requests): a lookup that succeeded stays true until something leaves.
        self.removals = 0

    # -- queries -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, txid: object) -> bool:
        return txid in self._by_id

    def __iter__(self) -> Iterator[VerifiedTx]:
        return (entry.vtx for entry in list(self._by_id.values()))

    def get(self, txid: bytes) -> VerifiedTx | None:
        entry = self._by_id.get(txid)
        return entry.vtx if entry is not None else None

    def transactions(self, txids: Iterable[bytes]) -> list[Transaction]:
        """Those of `txids` that are here, in order (relay serves requests in bulk)."""
        by_id = self._by_id
        return [entry.vtx.tx for txid in txids if (entry := by_id.get(txid)) is not None]

    @property
    def bytes_used(self) -> int:
        """Sum of the encoded sizes of the pooled transactions."""
        return self._bytes

    def pending_for(self, sender: bytes) -> list[VerifiedTx]:
        """The sender's pooled transactions in nonce order (gaps possible)."""
        by_nonce = self._by_sender.get(sender, {})
        return [by_nonce[nonce].vtx for nonce in sorted(by_nonce)]

    def next_nonce(self, sender: bytes) -> int:
        """The nonce a wallet should use next: past the contiguous run from the account."""
        nonce = self._accounts.account_nonce(sender)
        by_nonce = self._by_sender.get(sender, {})
        while nonce in by_nonce:
            nonce += 1
        return nonce

    # -- admission ---------------------------------------------------------------------

    def add(self, vtx: VerifiedTx, now: float) -> AddResult:
        """Admit a verified transaction or raise ValidationError saying why not."""
        result = self._admit(vtx, now)
        if len(self._expiry_heap) > 2 * len(self._by_id) + HEAP_SLACK:
            self._maybe_compact()
        return result

    def _admit(self, vtx: VerifiedTx, added_at: float) -> AddResult:
        if vtx.txid in self._by_id:
            raise ValidationError(RejectCode.DUPLICATE, f"transaction {vtx.txid.hex()}")
        body = vtx.tx.body
        sender = vtx.sender
        account_nonce = self._accounts.account_nonce(sender)
        if body.nonce < account_nonce:
            raise ValidationError(
                RejectCode.BAD_NONCE, f"nonce {body.nonce} < account nonce {account_nonce}"
            )
        if body.nonce > account_nonce + MAX_NONCE_GAP:
            raise ValidationError(
                RejectCode.NONCE_GAP,
                f"nonce {body.nonce} > account nonce {account_nonce} + {MAX_NONCE_GAP}",
            )
        if body.fee < self._min_fee_rate * vtx.size:
            raise ValidationError(
                RejectCode.FEE_TOO_LOW,
                f"fee rate {vtx.fee_rate:.3f} < minimum {self._min_fee_rate:.3f}",
            )
        by_nonce = self._by_sender.get(sender)
        old = None if by_nonce is None else by_nonce.get(body.nonce)
        if old is not None:
            _check_replacement(old.vtx, vtx)
        elif by_nonce is not None and len(by_nonce) >= MAX_PENDING_PER_SENDER:
            raise ValidationError(
                RejectCode.TOO_MANY_PENDING, f"sender has {len(by_nonce)} pending transactions"
            )
        others = self._pending_cost.get(sender, 0) - (0 if old is None else tx_cost(old.vtx))
        balance = self._accounts.account_balance(sender)
        if others + body.amount + body.fee > balance:
            raise ValidationError(
                RejectCode.INSUFFICIENT_FUNDS,
                f"pending cost {others + tx_cost(vtx)} > balance {balance}",
            )

        removed: list[_Entry] = []
        if old is not None:
            self._remove(old)
            removed.append(old)
        self._seq += 1
        entry = _Entry(vtx, added_at, self._seq)
        self._insert(entry)
        self._seq += 1  # `_refresh(sender)`, which now has transactions here
        self._tail_token[sender] = self._seq
        self._unscored[sender] = None
        while self._bytes > self._max_bytes:
            victim = self._pop_victim()
            if victim is entry:
                self._roll_back(entry, removed)
                raise ValidationError(
                    RejectCode.MEMPOOL_FULL, f"fee rate {vtx.fee_rate:.3f} too low for a full pool"
                )
            self._remove(victim)
            removed.append(victim)
            self._refresh(victim.vtx.sender)
        return AddResult.REPLACED if old is not None else AddResult.ADDED

    def _roll_back(self, entry: _Entry, removed: list[_Entry]) -> None:
        """Undo a failed admission: drop `entry`, put back what it displaced."""
        self._remove(entry)
        for old in removed:
            self._insert(old)
        for sender in dict.fromkeys([entry.vtx.sender, *(old.vtx.sender for old in removed)]):
            self._refresh(sender)

    # -- block templates ---------------------------------------------------------------

    def select(self, max_bytes: int, max_count: int) -> list[VerifiedTx]:
        """Transactions for a block: best fee rate first, each sender's in nonce order.

        A sender's run starts at its account nonce and stops at the first transaction that
        does not fit in the remaining bytes or the sender's remaining balance, or at a gap.
        """
        ready: list[tuple[float, int, bytes, int]] = []  # (-fee rate, seq, sender, nonce)
        budgets: dict[bytes, int] = {}
        for sender, by_nonce in self._by_sender.items():
            nonce = self._accounts.account_nonce(sender)
            head = by_nonce.get(nonce)
            if head is not None:
                budgets[sender] = self._accounts.account_balance(sender)
                ready.append((-head.vtx.fee_rate, head.seq, sender, nonce))
        heapq.heapify(ready)
        chosen: list[VerifiedTx] = []
        room = max_bytes
        while ready and len(chosen) < max_count:
            _, _, sender, nonce = heapq.heappop(ready)
            by_nonce = self._by_sender[sender]
            vtx = by_nonce[nonce].vtx
            cost = tx_cost(vtx)
            if vtx.size > room or cost > budgets[sender]:
                continue  # the sender's later nonces cannot come before this one
            chosen.append(vtx)
            room -= vtx.size
            budgets[sender] -= cost
            successor = by_nonce.get(nonce + 1)
            if successor is not None:
                heapq.heappush(ready, (-successor.vtx.fee_rate, successor.seq, sender, nonce + 1))
        return chosen

    def remove(self, txid: bytes) -> VerifiedTx | None:
        """Take one transaction out (a stem transaction that went public elsewhere)."""
        entry = self._by_id.get(txid)
        if entry is None:
            return None
        self._remove(entry)
        self._refresh(entry.vtx.sender)
        return entry.vtx

    # -- chain events ------------------------------------------------------------------

    def block_connected(self, vtxs: Sequence[VerifiedTx]) -> None:
        """Forget a new block's transactions and what it made invalid.

        Call after the account view reflects the block. Besides the included transactions,
        this drops any the block's senders can no longer use (nonce now taken, or no longer
        affordable). Accounts the block does not touch are left alone; `select` rechecks
        balances anyway.
        """
        for vtx in vtxs:
            entry = self._by_id.get(vtx.txid)
            if entry is not None:
                self._remove(entry)
        self._revalidate(a for vtx in vtxs for a in (vtx.sender, vtx.tx.body.recipient))
        self._maybe_compact()

    def block_disconnected(self, vtxs: Sequence[VerifiedTx], now: float) -> None:
        """Take back the transactions of a block undone by a reorg.

        Call once the account view no longer includes the block (after the whole reorg is
        fine too: everything is checked against the view as it is then). The block's
        transactions come before their senders' pending ones in nonce order, so they go
        in first: the senders' pending transactions are set aside, the block's go through
        admission as new, then the set-aside ones again with their old timestamps.
        Recipients lose the block's payments, so their pending transactions are rechecked.
        Whatever admission rejects (unaffordable now, too cheap for a full pool, ...) is
        dropped. Dicts, not sets, keep the order deterministic.
        """
        senders = dict.fromkeys(vtx.sender for vtx in vtxs)
        set_aside: list[_Entry] = []
        for sender in senders:
            for nonce in sorted(self._by_sender.get(sender, {})):
                entry = self._by_sender[sender][nonce]
                self._remove(entry)
                set_aside.append(entry)
            self._refresh(sender)
        self._revalidate(r for vtx in vtxs if (r := vtx.tx.body.recipient) not in senders)
        readmit = [(vtx, now) for vtx in vtxs] + [(e.vtx, e.added_at) for e in set_aside]
        for vtx, added_at in readmit:
            try:
                self._admit(vtx, added_at)
            except ValidationError:
                continue
        self._maybe_compact()

    def expire(self, now: float) -> list[bytes]:
        """Drop transactions older than the expiry, with their senders' later nonces."""
        removed: list[bytes] = []
        touched: dict[bytes, None] = {}  # ordered, so refreshes happen deterministically
        heap = self._expiry_heap
        while heap and heap[0][0] + self._expiry < now:
            _, seq, txid = heapq.heappop(heap)
            entry = self._by_id.get(txid)
            if entry is None or entry.seq != seq:
                continue  # stale: already removed or re-admitted
            sender = entry.vtx.sender
            by_nonce = self._by_sender[sender]
            for nonce in sorted(n for n in by_nonce if n >= entry.nonce):
                later = by_nonce[nonce]
                self._remove(later)
                removed.append(later.vtx.txid)
            touched[sender] = None
        for sender in touched:
            self._refresh(sender)
        self._maybe_compact()
        return removed

    # -- internals ---------------------------------------------------------------------

    def _insert(self, entry: _Entry) -> None:
        vtx = entry.vtx
        sender, body = vtx.sender, vtx.tx.body
        nonce, cost, rate = body.nonce, body.amount + body.fee, body.fee / vtx.size
        self._by_id[vtx.txid] = entry
        by_nonce = self._by_sender.get(sender)
        if by_nonce is None:
            self._by_sender[sender] = {nonce: entry}
            self._pending_cost[sender] = cost
            self._summary[sender] = (nonce, nonce, rate)
        else:
            by_nonce[nonce] = entry
            self._pending_cost[sender] += cost
            summary = self._summary.get(sender)
            if summary is not None:
                low, high, low_rate = summary
                self._summary[sender] = (
                    nonce if nonce < low else low,
                    nonce if nonce > high else high,
                    rate if rate < low_rate else low_rate,
                )
        self._bytes += vtx.size
        heapq.heappush(self._expiry_heap, (entry.added_at, entry.seq, vtx.txid))

    def _remove(self, entry: _Entry) -> None:
        """Unlink an entry; its heap items go stale. The caller refreshes the sender."""
        vtx = entry.vtx
        del self._by_id[vtx.txid]
        self.removals += 1
        by_nonce = self._by_sender[vtx.sender]
        del by_nonce[entry.nonce]
        self._summary.pop(vtx.sender, None)
        if by_nonce:
            self._pending_cost[vtx.sender] -= tx_cost(vtx)
        else:
            del self._by_sender[vtx.sender]
            del self._pending_cost[vtx.sender]
        self._bytes -= vtx.size

    def _revalidate(self, addresses: Iterable[bytes]) -> None:
        """Drop senders' transactions with used nonces, then any unaffordable suffix."""
        for sender in dict.fromkeys(addresses):
            by_nonce = self._by_sender.get(sender, {})
            if not by_nonce:
                self._refresh(sender)  # forget a stale eviction token
                continue
            account_nonce = self._accounts.account_nonce(sender)
            budget = self._accounts.account_balance(sender)
            broke = False
            for nonce in sorted(by_nonce):
                entry = by_nonce[nonce]
                if not broke and nonce >= account_nonce:
                    budget -= tx_cost(entry.vtx)
                    broke = budget < 0
                if broke or nonce < account_nonce:
                    self._remove(entry)
            self._refresh(sender)

    def _refresh(self, sender: bytes) -> None:
        """Give the sender a new eviction token (its older heap items go stale); its
        score is pushed when the heap is next needed (`_push_scores`)."""
        if sender not in self._by_sender:
            self._tail_token.pop(sender, None)
            self._unscored.pop(sender, None)
            return
        self._seq += 1
        self._tail_token[sender] = self._seq
        self._unscored[sender] = None

    def _push_scores(self) -> None:
        """Push the current score of every sender changed since the last eviction."""
        heap, tokens, by_sender = self._evict_heap, self._tail_token, self._by_sender
        for sender in self._unscored:
            by_nonce = by_sender.get(sender)
            if by_nonce:
                heapq.heappush(heap, (self._score(sender, by_nonce), -tokens[sender], sender))
        self._unscored.clear()
        if len(heap) > 2 * len(tokens) + HEAP_SLACK:
            self._evict_heap = [item for item in heap if tokens.get(item[2]) == -item[1]]
            heapq.heapify(self._evict_heap)

    def _score(self, sender: bytes, by_nonce: dict[int, _Entry]) -> float:
        """What the sender's transactions are worth to a miner, as a fee rate."""
        summary = self._summary.get(sender)
        if summary is None:
            rate = min(entry.vtx.fee_rate for entry in by_nonce.values())
            summary = self._summary[sender] = (min(by_nonce), max(by_nonce), rate)
        low, high, rate = summary
        first = self._accounts.account_nonce(sender)
        if low != first or high - first + 1 != len(by_nonce):
            return _NOT_EXECUTABLE
        return rate

    def _pop_victim(self) -> _Entry:
        """The highest-nonce transaction of the lowest-scoring sender."""
        self._push_scores()
        heap = self._evict_heap
        while True:
            _, neg_token, sender = heapq.heappop(heap)  # a live item exists while bytes > 0
            if self._tail_token.get(sender) == -neg_token:
                del self._tail_token[sender]
                by_nonce = self._by_sender[sender]
                return by_nonce[max(by_nonce)]

    def _maybe_compact(self) -> None:
        """Rebuild the expiry heap once stale items outnumber live ones (plus slack); the
        eviction heap is kept so by `_push_scores`."""
        if len(self._expiry_heap) > 2 * len(self._by_id) + HEAP_SLACK:
            self._expiry_heap = [
                item
                for item in self._expiry_heap
                if (entry := self._by_id.get(item[2])) is not None and entry.seq == item[1]
            ]
            heapq.heapify(self._expiry_heap)


def _check_replacement(old: VerifiedTx, new: VerifiedTx) -> None:
    """Replace-by-fee: the fee must rise by the bump and the fee rate must rise at all."""
    old_fee, new_fee = old.tx.body.fee, new.tx.body.fee
    if new_fee * 100 < old_fee * (100 + REPLACEMENT_FEE_BUMP_PERCENT):
        raise ValidationError(
            RejectCode.FEE_TOO_LOW,
            f"replacement fee {new_fee} < {old_fee} + {REPLACEMENT_FEE_BUMP_PERCENT}%",
        )
    if new_fee * old.size <= old_fee * new.size:  # new fee rate <= old fee rate, exactly
        raise ValidationError(
            RejectCode.FEE_TOO_LOW, "replacement fee rate is not higher than the original's"
        )

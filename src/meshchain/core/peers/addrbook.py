"""The address book: which peers we know of, and which one to dial next.

Modelled on Bitcoin Core's addrman. Addresses we have only heard of live in the "new"
table; an address we have connected to moves to the "tried" table. Both tables are
fixed grids of buckets, and a keyed hash of address groups picks the bucket (see
addrbook_tables), so an attacker who controls a few networks can fill only a small
share of either table, and cannot evict a peer that works: a tried slot is handed over
only after its holder fails a test connection ("test-before-evict").

Sans-IO like the rest of core/: time comes in as `now` (unix seconds; the book keeps
whole seconds), randomness from the injected `random.Random`.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from meshchain.core.peers.addrbook_codec import (
    MAX_STORED_REFERENCES,
    AddressBookError,
    StoredBook,
    StoredEntry,
    decode_book,
    encode_book,
)
from meshchain.core.peers.addrbook_entry import (
    DAY,
    HOUR,
    MAX_FUTURE_DRIFT,
    MIN_CHANCE,
    MINUTE,
    NODE_ID_SIZE,
    EntryState,
    is_terrible,
    select_chance,
)
from meshchain.core.peers.addrbook_tables import (
    BUCKET_SIZE,
    NEW_BUCKET_COUNT,
    TRIED_BUCKET_COUNT,
    BucketTable,
    Placement,
)
from meshchain.core.peers.address import (
    IPV4_MAPPED_PREFIX,
    GroupPolicy,
    NetAddress,
    checked_address,
)
from meshchain.core.wire.codec import MAX_UINT
from meshchain.core.wire.messages import MAX_ADDR_PER_MESSAGE, AddrEntry

__all__ = [
    "AddResult",
    "AddressBook",
    "AddressBookError",
    "AddressInfo",
]

# The most entries each table can hold (Bitcoin: 65,536 new, 16,384 tried).
NEW_CAPACITY = NEW_BUCKET_COUNT * BUCKET_SIZE
TRIED_CAPACITY = TRIED_BUCKET_COUNT * BUCKET_SIZE
# Bitcoin's ADDRMAN_NEW_BUCKETS_PER_ADDRESS: the most new buckets one address may sit in.
NEW_BUCKETS_PER_ADDRESS = MAX_STORED_REFERENCES
# Bitcoin's ADDRMAN_REPLACEMENT: a tried entry that worked this recently is never evicted.
REPLACEMENT = 4 * HOUR
# Bitcoin's ADDRMAN_TEST_WINDOW: a collision nobody tested in this long evicts the old entry.
TEST_WINDOW = 40 * MINUTE
# Bitcoin's ADDRMAN_SET_TRIED_COLLISION_SIZE: pending tried-table collisions kept.
MAX_TRIED_COLLISIONS = 10
# Bitcoin's ResolveCollisions_: a test connection gets a minute to succeed.
FEELER_GRACE = MINUTE
# Older than this is no real sighting (Bitcoin rejects times before 1973). Relative to
# `now`, not a calendar date, so a simulator whose clock starts at 0 works the same.
MAX_PLAUSIBLE_AGE = 20 * 365 * 24 * 3600
# Bitcoin's net_processing stamps an implausible timestamp "five days ago".
BAD_TIME_AGE = 5 * DAY
# Bitcoin's AddSingle: a known address's `seen` moves forward only by more than an hour
# (if it was seen in the last day) or a day (otherwise), so gossip cannot churn it.
ONLINE_WINDOW = DAY
ONLINE_UPDATE_INTERVAL = HOUR
OFFLINE_UPDATE_INTERVAL = DAY
# Bitcoin's Connected_: a live connection refreshes `seen` at most every 20 minutes.
CONNECTED_UPDATE_INTERVAL = 20 * MINUTE
# Bitcoin's Select: every rejected candidate makes the next one 1.2x likelier to pass.
SELECT_ESCALATION = 1.2
# Rounds after which escalation accepts even the least likely candidate, so Select ends.
MAX_SELECT_ROUNDS = math.ceil(math.log(1 / MIN_CHANCE) / math.log(SELECT_ESCALATION)) + 1
# Bitcoin's MAX_ADDR_TO_SEND and MAX_PCT_ADDR_TO_SEND: the GetAddr answer's bounds.
GETADDR_MAX_COUNT = MAX_ADDR_PER_MESSAGE
GETADDR_MAX_PERCENT = 23
# One Addr message's worth (Bitcoin's MAX_ADDR_TO_SEND); more in one call is ignored.
MAX_ADD_PER_CALL = MAX_ADDR_PER_MESSAGE


@dataclass(frozen=True, slots=True)
class AddressInfo:
    """A snapshot of one entry. `buckets`: the new buckets that reference it, or its
    tried bucket; `ref_count` is the number of new buckets (0 when tried)."""

    address: NetAddress
    node_id: bytes
    services: int
    seen: int
    last_try: int
    last_success: int
    attempts: int
    source_group: bytes
    in_tried: bool
    ref_count: int
    buckets: tuple[int, ...]


@dataclass(slots=True)
class AddResult:
    """What became of one batch. `added + updated + dropped + unusable + duplicate +
    excess == total`; `bad_time` counts entries (stored or not) whose timestamp was
    implausible and was replaced by "five days ago"."""

    total: int = 0
    added: int = 0  # new addresses stored
    updated: int = 0  # already known; state refreshed where the news was new enough
    dropped: int = 0  # new, but their slot holds an entry worth more
    unusable: int = 0  # malformed, or not an address the policy lets us dial
    duplicate: int = 0  # repeated within this batch
    excess: int = 0  # beyond MAX_ADD_PER_CALL, not looked at
    bad_time: int = 0

    @property
    def misbehaviour(self) -> int:
        """Entries an honest peer's book cannot produce, for the caller to charge it with.
        `unusable` is left out: another node's policy may rightly allow what ours does not."""
        return self.duplicate + self.excess + self.bad_time


def _normalised(address: NetAddress) -> NetAddress | None:
    """The canonical form of a wire address (IPv4 as 4 bytes), or None if malformed."""
    ip = address.ip
    if len(ip) == 4 or (len(ip) == 16 and not ip.startswith(IPV4_MAPPED_PREFIX)):
        return address
    return checked_address(ip, address.port)


def _seconds(now: float) -> int:
    return max(0, int(now))


class _Verdict(enum.Enum):
    """What to do with one pending tried-table collision."""

    WAIT = enum.auto()
    KEEP_OLD = enum.auto()
    REPLACE = enum.auto()
    STALE = enum.auto()


class AddressBook:
    """Known peer addresses in Bitcoin Core's new/tried bucket tables.

    `key` is the node's 32-byte secret bucketing key: generate it once, keep it (it is
    saved by `to_bytes`), never share it. Every operation is O(1) or O(bucket) except
    `get_addr`, `to_bytes`, `from_bytes` and `consistency_problems`.
    """

    __slots__ = (
        "_collisions",
        "_entries",
        "_key",
        "_last_good",
        "_new",
        "_place",
        "_policy",
        "_rng",
        "_tried",
        "skipped_on_load",
    )

    def __init__(self, key: bytes, policy: GroupPolicy, rng: random.Random) -> None:
        self._place = Placement(key)
        self._key = key
        self._policy = policy
        self._rng = rng
        self._entries: dict[NetAddress, EntryState] = {}
        self._new = BucketTable(NEW_BUCKET_COUNT)
        self._tried = BucketTable(TRIED_BUCKET_COUNT)
        self._collisions: dict[NetAddress, int] = {}  # waiting for tried -> when it collided
        # Bitcoin's nLastGood: failures count once per entry between two successes
        # anywhere, so an offline node does not mark its whole book as failing.
        self._last_good = 1
        self.skipped_on_load = 0

    # -- size ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, address: object) -> bool:
        return address in self._entries

    @property
    def new_count(self) -> int:
        return len(self._entries) - len(self._tried)

    @property
    def tried_count(self) -> int:
        return len(self._tried)

    @property
    def collision_count(self) -> int:
        return len(self._collisions)

    def info(self, address: NetAddress) -> AddressInfo | None:
        record = self._entries.get(address)
        return None if record is None else self._snapshot(record)

    def _snapshot(self, record: EntryState) -> AddressInfo:
        if record.in_tried:
            buckets: tuple[int, ...] = (self._tried_bucket(record),)
        else:
            buckets = tuple(record.new_buckets)
        return AddressInfo(
            address=record.address,
            node_id=record.node_id,
            services=record.services,
            seen=record.seen,
            last_try=record.last_try,
            last_success=record.last_success,
            attempts=record.attempts,
            source_group=record.source_group,
            in_tried=record.in_tried,
            ref_count=len(record.new_buckets),
            buckets=buckets,
        )

    # -- adding --------------------------------------------------------------------

    def add(
        self,
        entries: Iterable[AddrEntry],
        source: NetAddress | None,
        now: float,
        time_penalty: float = 0.0,
    ) -> AddResult:
        """Learn addresses that `source` told us about (None: configured or bootstrap).

        `time_penalty` (Bitcoin uses 2 hours for relayed gossip) ages what a peer
        claims about others, not what it says about itself.
        """
        result = AddResult()
        now_s = _seconds(now)
        penalty = max(0, int(time_penalty))
        source_group = None if source is None else self._policy.group(source)
        in_batch: set[NetAddress] = set()
        for entry in entries:
            result.total += 1
            if result.total > MAX_ADD_PER_CALL:
                result.excess += 1
                continue
            address = _normalised(entry.address)
            if address is None or not self._policy.is_usable(address):
                result.unusable += 1
            elif address in in_batch:
                result.duplicate += 1
            else:
                in_batch.add(address)
                entry_penalty = 0 if address == source else penalty
                self._add_one(address, entry, source_group, entry_penalty, now_s, result)
        return result

    def _add_one(
        self,
        address: NetAddress,
        entry: AddrEntry,
        source_group: bytes | None,
        penalty: int,
        now: int,
        result: AddResult,
    ) -> None:
        announced = entry.seen
        if not now - MAX_PLAUSIBLE_AGE <= announced <= now + MAX_FUTURE_DRIFT:
            result.bad_time += 1
            announced = max(0, now - BAD_TIME_AGE)
        record = self._entries.get(address)
        if record is not None:
            self._refresh(record, entry, announced, penalty, source_group, now)
            result.updated += 1
        elif self._add_new(address, entry, announced - penalty, source_group, now):
            result.added += 1
        else:
            result.dropped += 1

    def _add_new(
        self,
        address: NetAddress,
        entry: AddrEntry,
        seen: int,
        source_group: bytes | None,
        now: int,
    ) -> bool:
        group = self._policy.group(address)
        home_group = group if source_group is None else source_group
        record = EntryState(address, group, home_group, entry)
        record.seen = max(0, seen)
        if not self._take_new_slot(record, self._place.new_bucket(group, home_group), now):
            return False
        self._entries[address] = record
        return True

    def _refresh(
        self,
        record: EntryState,
        entry: AddrEntry,
        announced: int,
        penalty: int,
        source_group: bytes | None,
        now: int,
    ) -> None:
        """Bitcoin's AddSingle for a known address: newer `seen`, more services, and
        now and then one more new-bucket reference (chance halving with each)."""
        online = now - announced < ONLINE_WINDOW
        interval = ONLINE_UPDATE_INTERVAL if online else OFFLINE_UPDATE_INTERVAL
        if record.seen < announced - interval - penalty:
            record.seen = max(0, announced - penalty)
        record.services |= entry.services
        if not record.node_id and len(entry.node_id) == NODE_ID_SIZE:
            record.node_id = entry.node_id
        if announced <= record.seen or record.in_tried:
            return
        references = len(record.new_buckets)
        if references >= NEW_BUCKETS_PER_ADDRESS or self._rng.randrange(1 << references):
            return
        home_group = record.group if source_group is None else source_group
        self._take_new_slot(record, self._place.new_bucket(record.group, home_group), now)

    def _take_new_slot(self, record: EntryState, bucket: int, now: int) -> bool:
        """Put a reference to `record` in `bucket` unless its slot holds something better."""
        slot = self._place.new_slot(bucket, record.address)
        occupant = self._new.get(slot)
        if occupant == record.address:
            return False
        if occupant is not None:
            held = self._entries[occupant]
            spare = len(held.new_buckets) > 1 and not record.new_buckets
            if not (spare or is_terrible(held, now)):
                return False
            self._clear_new_slot(slot)
        self._new.put(slot, record.address)
        record.new_buckets.append(bucket)
        return True

    def _clear_new_slot(self, slot: int) -> None:
        address = self._new.remove(slot)
        record = self._entries[address]
        record.new_buckets.remove(slot // BUCKET_SIZE)
        if not record.new_buckets and not record.in_tried:
            del self._entries[address]
            self._collisions.pop(address, None)

    # -- connection outcomes ---------------------------------------------------------

    def good(self, address: NetAddress, now: float, node_id: bytes | None = None) -> bool:
        """An outbound connection to `address` worked (`node_id`: the identity the
        handshake proved). True if the address is now in the tried table; False if it
        is unknown or its tried slot is taken (a collision to test, see
        `select_tried_collision`)."""
        now_s = _seconds(now)
        self._last_good = now_s
        record = self._entries.get(address)
        if record is None:
            return False
        record.last_success = record.last_try = now_s
        record.attempts = 0
        if node_id is not None and len(node_id) == NODE_ID_SIZE:
            record.node_id = node_id
        if record.in_tried:
            return True
        slot = self._tried_slot(record)
        if self._tried.get(slot) is not None:
            if len(self._collisions) < MAX_TRIED_COLLISIONS:
                self._collisions.setdefault(address, now_s)
            return False
        self._move_to_tried(record, slot)
        return True

    def attempt(self, address: NetAddress, now: float, count_failure: bool = True) -> None:
        """We are dialling `address`. A failure counts only if some connection, to any
        peer, worked since this entry's last counted one (Bitcoin's nLastGood): an
        offline node must not condemn its whole book."""
        record = self._entries.get(address)
        if record is None:
            return
        now_s = _seconds(now)
        record.last_try = now_s
        if count_failure and record.last_count_attempt < self._last_good:
            record.last_count_attempt = now_s
            record.attempts += 1

    def connected(self, address: NetAddress, now: float) -> None:
        """A connection to `address` is alive: it is seen now (refreshed sparingly, so
        that `seen` leaks little about when we talk to whom)."""
        record = self._entries.get(address)
        now_s = _seconds(now)
        if record is not None and now_s - record.seen > CONNECTED_UPDATE_INTERVAL:
            record.seen = now_s

    def set_services(self, address: NetAddress, services: int) -> None:
        """The services `address` announced in its Hello (out-of-range values are
        ignored: they could not be saved)."""
        record = self._entries.get(address)
        if record is not None and 0 <= services <= MAX_UINT:
            record.services = services

    def _tried_bucket(self, record: EntryState) -> int:
        return self._place.tried_bucket(record.address, record.group)

    def _tried_slot(self, record: EntryState) -> int:
        return self._place.tried_slot(self._tried_bucket(record), record.address)

    def _move_to_tried(self, record: EntryState, slot: int) -> None:
        """Bitcoin's MakeTried: leave every new bucket; a tried occupant goes back to new."""
        for bucket in record.new_buckets:
            self._new.remove(self._place.new_slot(bucket, record.address))
        record.new_buckets.clear()
        occupant = self._tried.get(slot)
        if occupant is not None:
            self._demote(self._entries[occupant], slot)
        self._tried.put(slot, record.address)
        record.in_tried = True
        self._collisions.pop(record.address, None)

    def _demote(self, record: EntryState, slot: int) -> None:
        """Move a tried entry back to its home new bucket, evicting whatever is there."""
        self._tried.remove(slot)
        record.in_tried = False
        bucket = self._place.new_bucket(record.group, record.source_group)
        new_slot = self._place.new_slot(bucket, record.address)
        if self._new.get(new_slot) is not None:
            self._clear_new_slot(new_slot)
        self._new.put(new_slot, record.address)
        record.new_buckets = [bucket]

    # -- test-before-evict -------------------------------------------------------------

    def select_tried_collision(self) -> AddressInfo | None:
        """The tried entry a pending collision would evict: dial it (a feeler) and report
        `good` or `attempt`, then call `resolve_collisions`."""
        if not self._collisions:
            return None
        address = self._rng.choice(list(self._collisions))
        record = self._entries.get(address)
        if record is None or record.in_tried:
            del self._collisions[address]
            return None
        occupant = self._tried.get(self._tried_slot(record))
        return None if occupant is None else self._snapshot(self._entries[occupant])

    def resolve_collisions(self, now: float) -> int:
        """Settle pending collisions whose test is over; how many entries moved to tried."""
        now_s = _seconds(now)
        replaced = 0
        for address, collided_at in list(self._collisions.items()):
            verdict = self._collision_verdict(address, collided_at, now_s)
            if verdict is _Verdict.WAIT:
                continue
            if verdict is _Verdict.REPLACE:
                record = self._entries[address]
                self._move_to_tried(record, self._tried_slot(record))
                replaced += 1
            self._collisions.pop(address, None)
        return replaced

    def _collision_verdict(self, address: NetAddress, collided_at: int, now: int) -> _Verdict:
        """Bitcoin's ResolveCollisions_ rules, with "failed its test" made explicit: the
        old entry was tried after the collision and has not worked since."""
        record = self._entries.get(address)
        if record is None or record.in_tried:
            return _Verdict.STALE
        occupant = self._tried.get(self._tried_slot(record))
        if occupant is None:
            return _Verdict.REPLACE
        old = self._entries[occupant]
        if old.last_success >= collided_at or now - old.last_success < REPLACEMENT:
            return _Verdict.KEEP_OLD
        if old.last_try >= collided_at:
            return _Verdict.REPLACE if now - old.last_try > FEELER_GRACE else _Verdict.WAIT
        return _Verdict.REPLACE if now - collided_at > TEST_WINDOW else _Verdict.WAIT

    # -- choosing ----------------------------------------------------------------------

    def select(self, now: float, new_only: bool = False) -> AddressInfo | None:
        """Bitcoin's Select: an address to dial, tried or new with even odds, favouring
        entries not tried lately and not failing. None only if there is nothing to pick."""
        table = self._table_to_select_from(new_only)
        if table is None:
            return None
        now_s = _seconds(now)
        record = self._entries[table.random_address(self._rng)]
        acceptance = 1.0
        for _ in range(MAX_SELECT_ROUNDS):
            if self._rng.random() < acceptance * select_chance(record, now_s):
                break
            acceptance *= SELECT_ESCALATION
            record = self._entries[table.random_address(self._rng)]
        return self._snapshot(record)

    def _table_to_select_from(self, new_only: bool) -> BucketTable | None:
        has_new = len(self._new) > 0
        if new_only:
            return self._new if has_new else None
        if len(self._tried) and (not has_new or self._rng.getrandbits(1)):
            return self._tried
        return self._new if has_new else None

    def get_addr(
        self,
        now: float,
        max_count: int = GETADDR_MAX_COUNT,
        max_percent: int = GETADDR_MAX_PERCENT,
    ) -> list[AddrEntry]:
        """A random sample to answer GetAddr: at most `max_percent`% of the book and
        `max_count` entries, none of them terrible. O(size of the book)."""
        now_s = _seconds(now)
        addresses = list(self._entries)
        wanted = min(max(0, max_count), len(addresses) * min(max(0, max_percent), 100) // 100)
        sample: list[AddrEntry] = []
        for index in range(len(addresses)):
            if len(sample) >= wanted:
                break
            pick = self._rng.randrange(index, len(addresses))
            addresses[index], addresses[pick] = addresses[pick], addresses[index]
            record = self._entries[addresses[index]]
            if not is_terrible(record, now_s):
                sample.append(
                    AddrEntry(record.address, record.node_id, record.services, record.seen)
                )
        return sample

    # -- persistence -------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole book, key included (the file must be as private as the key)."""
        entries = [
            StoredEntry(
                address=record.address,
                node_id=record.node_id,
                services=record.services,
                seen=record.seen,
                last_try=record.last_try,
                last_success=record.last_success,
                attempts=record.attempts,
                source_group=record.source_group,
                in_tried=record.in_tried,
                new_buckets=list(record.new_buckets),
            )
            for record in self._entries.values()
        ]
        return encode_book(StoredBook(self._key, entries))

    @classmethod
    def from_bytes(cls, data: bytes, policy: GroupPolicy, rng: random.Random) -> AddressBook:
        """A book saved by `to_bytes`. Slots are recomputed; entries that are unusable
        under `policy`, repeated, or whose slot is taken are skipped and counted in
        `skipped_on_load`. Raises AddressBookError if the bytes are not a book."""
        stored = decode_book(data)
        book = cls(stored.key, policy, rng)
        for entry in stored.entries:
            if not book._restore(entry):
                book.skipped_on_load += 1
        return book

    def _restore(self, entry: StoredEntry) -> bool:
        address = _normalised(entry.address)
        if address is None or address in self._entries or not self._policy.is_usable(address):
            return False
        group = self._policy.group(address)
        record = EntryState(address, group, entry.source_group or group, entry)
        record.last_try = entry.last_try
        record.last_success = entry.last_success
        record.attempts = entry.attempts
        placed = self._restore_tried(record) if entry.in_tried else self._restore_new(record, entry)
        if placed:
            self._entries[address] = record
        return placed

    def _restore_tried(self, record: EntryState) -> bool:
        slot = self._tried_slot(record)
        if self._tried.get(slot) is not None:
            return False
        self._tried.put(slot, record.address)
        record.in_tried = True
        return True

    def _restore_new(self, record: EntryState, entry: StoredEntry) -> bool:
        """Back into the buckets it was in; failing all, into its home bucket."""
        for bucket in dict.fromkeys(entry.new_buckets):
            self._restore_reference(record, bucket)
        if not record.new_buckets:
            home = self._place.new_bucket(record.group, record.source_group)
            self._restore_reference(record, home)
        return bool(record.new_buckets)

    def _restore_reference(self, record: EntryState, bucket: int) -> None:
        if bucket >= NEW_BUCKET_COUNT or len(record.new_buckets) >= NEW_BUCKETS_PER_ADDRESS:
            return
        slot = self._place.new_slot(bucket, record.address)
        if self._new.get(slot) is None:
            self._new.put(slot, record.address)
            record.new_buckets.append(bucket)

    # -- checking ----------------------------------------------------------------------

    def consistency_problems(self) -> list[str]:
        """Every broken invariant between entries and tables (Bitcoin's CheckAddrman);
        O(size of the book), for tests and debugging."""
        problems = self._new.bookkeeping_problems() + self._tried.bookkeeping_problems()
        for slot, address in self._new.items():
            record = self._entries.get(address)
            bucket = slot // BUCKET_SIZE
            if record is None or record.in_tried or bucket not in record.new_buckets:
                problems.append(f"new slot {slot} holds {address} without a matching entry")
            elif self._place.new_slot(bucket, address) != slot:
                problems.append(f"{address} is in the wrong slot of new bucket {bucket}")
        for slot, address in self._tried.items():
            record = self._entries.get(address)
            if record is None or not record.in_tried or self._tried_slot(record) != slot:
                problems.append(f"tried slot {slot} holds {address} without a matching entry")
        for address, record in self._entries.items():
            problems.extend(self._record_problems(address, record))
        if len(self._collisions) > MAX_TRIED_COLLISIONS:
            problems.append(f"{len(self._collisions)} pending collisions")
        return problems

    def _record_problems(self, address: NetAddress, record: EntryState) -> list[str]:
        references = record.new_buckets
        if record.in_tried:
            if references or self._tried.get(self._tried_slot(record)) != address:
                return [f"tried entry {address} is not exactly in its tried slot"]
            return []
        if not references or len(references) > NEW_BUCKETS_PER_ADDRESS:
            return [f"new entry {address} has {len(references)} references"]
        if len(set(references)) != len(references):
            return [f"new entry {address} is referenced twice from one bucket"]
        if any(self._new.get(self._place.new_slot(b, address)) != address for b in references):
            return [f"new entry {address} lists a bucket that does not hold it"]
        return []

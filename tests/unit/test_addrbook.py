"""The address book: bucketing limits, test-before-evict, selection, GetAddr, persistence."""

from __future__ import annotations

import ast
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchain.core.peers import addrbook as addrbook_module
from meshchain.core.peers import addrbook_codec, addrbook_entry, addrbook_tables
from meshchain.core.peers.addrbook import (
    BAD_TIME_AGE,
    GETADDR_MAX_COUNT,
    MAX_ADD_PER_CALL,
    MAX_TRIED_COLLISIONS,
    NEW_BUCKETS_PER_ADDRESS,
    NEW_CAPACITY,
    TEST_WINDOW,
    TRIED_CAPACITY,
    AddressBook,
    AddressBookError,
    AddressInfo,
)
from meshchain.core.peers.addrbook_codec import StoredBook, StoredEntry, encode_book
from meshchain.core.peers.addrbook_entry import DAY, HOUR, MINUTE
from meshchain.core.peers.addrbook_tables import (
    BUCKET_SIZE,
    NEW_BUCKETS_PER_SOURCE_GROUP,
    TRIED_BUCKETS_PER_GROUP,
    Placement,
)
from meshchain.core.peers.address import GroupPolicy, NetAddress, parse_address
from meshchain.core.wire.messages import AddrEntry
from meshchain.errors import MeshchainError

KEY = bytes(range(32))
NOW = 1_700_000_000
PORT = 8333
MANY_GROUPS = GroupPolicy(ipv4_bits=24)  # every 10.a.b.0/24 is its own group
NODE_ID = bytes([7]) * 32


def ip4(a: int, b: int, c: int, d: int) -> NetAddress:
    return NetAddress(bytes([a, b, c, d]), PORT)


def net10(n: int) -> NetAddress:
    """The n-th address of 10.0.0.0/8."""
    return NetAddress(bytes([10]) + n.to_bytes(3, "big"), PORT)


def entry(
    address: NetAddress, seen: int = NOW, services: int = 1, node_id: bytes = b""
) -> AddrEntry:
    return AddrEntry(address, node_id, services, seen)


def new_book(policy: GroupPolicy | None = None, seed: int = 1, key: bytes = KEY) -> AddressBook:
    return AddressBook(key, policy or GroupPolicy(), random.Random(seed))


def add_all(
    book: AddressBook,
    addresses: Iterable[NetAddress],
    source: NetAddress | None = None,
    now: int = NOW,
    time_penalty: int = 0,
) -> None:
    """Add in Addr-sized batches, all seen `now`."""
    batch = [entry(address, now) for address in addresses]
    for start in range(0, len(batch), MAX_ADD_PER_CALL):
        book.add(batch[start : start + MAX_ADD_PER_CALL], source, now, time_penalty)


def info_of(book: AddressBook, address: NetAddress) -> AddressInfo:
    info = book.info(address)
    assert info is not None, f"{address} is not in the book"
    return info


def assert_consistent(book: AddressBook) -> None:
    assert book.consistency_problems() == []
    assert book.new_count + book.tried_count == len(book)
    assert book.new_count <= NEW_CAPACITY
    assert book.tried_count <= TRIED_CAPACITY


def tried_slot(address: NetAddress) -> int:
    place = Placement(KEY)
    return place.tried_slot(place.tried_bucket(address, GroupPolicy().group(address)), address)


def colliding_pair() -> tuple[NetAddress, NetAddress]:
    """Two addresses of one /16 that hash to the same tried slot under KEY."""
    seen: dict[int, NetAddress] = {}
    for n in range(1, 65536):
        address = ip4(10, 1, n >> 8, n & 0xFF)
        slot = tried_slot(address)
        if slot in seen:
            return seen[slot], address
        seen[slot] = address
    raise AssertionError("no collision in a /16")


def book_with_collision(
    old_good_at: int, collision_at: int
) -> tuple[AddressBook, NetAddress, NetAddress]:
    old, new = colliding_pair()
    book = new_book()
    book.add([entry(old, old_good_at)], None, old_good_at)
    book.add([entry(new, old_good_at)], ip4(11, 0, 0, 1), old_good_at)
    assert book.good(old, old_good_at)
    assert not book.good(new, collision_at)
    assert book.collision_count == 1
    return book, old, new


# -- adding ----------------------------------------------------------------------------


def test_an_added_address_is_selected_and_described() -> None:
    book = new_book()
    address = parse_address("10.1.2.3:8333")
    result = book.add([entry(address, NOW - 100, services=5, node_id=NODE_ID)], None, NOW)
    assert (result.total, result.added, result.updated) == (1, 1, 0)
    assert address in book
    assert len(book) == 1
    assert (book.new_count, book.tried_count) == (1, 0)
    chosen = book.select(NOW)
    assert chosen == book.info(address)
    info = info_of(book, address)
    assert (info.seen, info.services, info.node_id) == (NOW - 100, 5, NODE_ID)
    assert (info.in_tried, info.ref_count, info.attempts) == (False, 1, 0)
    assert info.source_group == GroupPolicy().group(address)  # no source: its own group


def test_select_on_an_empty_book_is_none() -> None:
    book = new_book()
    assert book.select(NOW) is None
    assert book.select(NOW, new_only=True) is None
    assert book.info(net10(1)) is None


def test_repeated_addresses_are_counted_once() -> None:
    book = new_book()
    address = net10(1)
    first = book.add([entry(address), entry(address)], None, NOW)
    assert (first.added, first.duplicate, first.total) == (1, 1, 2)
    again = book.add([entry(address, NOW + 60)], ip4(11, 0, 0, 1), NOW + 60)
    assert (again.added, again.updated) == (0, 1)
    assert (len(book), book.new_count) == (1, 1)


def test_a_known_address_takes_newer_news_and_more_services() -> None:
    book = new_book()
    address = net10(1)
    book.add([entry(address, NOW - 3 * HOUR, services=1)], None, NOW)
    book.add([entry(address, NOW - 2 * HOUR, services=2)], None, NOW)  # under an hour newer
    info = info_of(book, address)
    assert (info.seen, info.services) == (NOW - 3 * HOUR, 3)
    book.add([entry(address, NOW, services=0)], None, NOW)  # over an hour newer
    assert info_of(book, address).seen == NOW


def test_unusable_and_implausible_entries_are_counted() -> None:
    book = new_book(GroupPolicy(allow_local=False))
    good = ip4(8, 8, 8, 8)
    batch = [
        entry(NetAddress(bytes([8, 8, 4, 4]), 0)),  # no port
        entry(ip4(224, 0, 0, 1)),  # multicast
        entry(ip4(127, 0, 0, 1)),  # loopback, not allowed here
        entry(NetAddress(b"\x01\x02\x03\x04\x05", PORT)),  # neither IPv4 nor IPv6
        entry(ip4(1, 1, 1, 1), seen=NOW + 11 * MINUTE),  # from the future
        entry(ip4(9, 9, 9, 9), seen=900_000_000),  # 1998
        entry(good, seen=NOW + 5 * MINUTE),  # clock skew within tolerance
    ]
    result = book.add(batch, ip4(11, 0, 0, 1), NOW)
    assert (result.total, result.unusable, result.bad_time, result.added) == (7, 4, 2, 3)
    assert result.misbehaviour == 2
    assert len(book) == 3
    assert ip4(127, 0, 0, 1) not in book
    for liar in (ip4(1, 1, 1, 1), ip4(9, 9, 9, 9)):
        assert info_of(book, liar).seen == NOW - BAD_TIME_AGE
    assert info_of(book, good).seen == NOW + 5 * MINUTE


def test_ipv4_mapped_ipv6_is_stored_as_ipv4() -> None:
    book = new_book()
    mapped = NetAddress(bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 9]), PORT)
    assert book.add([entry(mapped)], None, NOW).added == 1
    assert net10(9) in book
    assert mapped not in book


def test_relayed_timestamps_are_penalised_but_not_self_announcements() -> None:
    book = new_book()
    peer, other = net10(1), net10(70_000)
    book.add([entry(peer), entry(other)], peer, NOW, time_penalty=2 * HOUR)
    assert info_of(book, peer).seen == NOW
    assert info_of(book, other).seen == NOW - 2 * HOUR


def test_more_than_one_message_worth_is_ignored() -> None:
    book = new_book(MANY_GROUPS)
    result = book.add([entry(net10(n * 256)) for n in range(MAX_ADD_PER_CALL + 5)], None, NOW)
    assert (result.excess, result.total) == (5, MAX_ADD_PER_CALL + 5)
    assert len(book) <= MAX_ADD_PER_CALL


address_strategy = st.builds(
    NetAddress,
    st.sampled_from([bytes([10, 0, a, b]) for a in range(4) for b in (0, 1, 255)])
    | st.sampled_from([bytes([224, 0, 0, 1]), bytes(4), bytes(16)]),
    st.sampled_from([0, PORT]),
)
entry_strategy = st.builds(
    entry,
    address_strategy,
    st.sampled_from([NOW, NOW - DAY, NOW + HOUR, 0, NOW - 40 * DAY]),
    st.integers(0, 7),
    st.sampled_from([b"", NODE_ID, b"short"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(entry_strategy, max_size=20), max_size=8))
def test_every_entry_is_accounted_for(batches: list[list[AddrEntry]]) -> None:
    book = new_book(MANY_GROUPS)
    stored = 0
    for index, batch in enumerate(batches):
        before = len(book)
        result = book.add(batch, ip4(11, index, 0, 1), NOW)
        assert result.total == len(batch)
        assert (
            result.added + result.updated + result.dropped + result.unusable + result.duplicate
            == result.total
        )
        assert len(book) <= before + result.added  # (an added one may evict a terrible one)
        stored += result.added
    assert len(book) <= stored
    assert_consistent(book)


# -- bucketing limits --------------------------------------------------------------------


def test_capacity_holds_under_100_000_adds_from_many_groups() -> None:
    rng = random.Random(3)
    book = new_book(MANY_GROUPS)
    addresses = [net10(n) for n in rng.sample(range(1, 1 << 24), 100_000)]
    for chunk in range(0, len(addresses), MAX_ADD_PER_CALL):
        source = ip4(11, chunk // MAX_ADD_PER_CALL, 0, 1)
        book.add([entry(a) for a in addresses[chunk : chunk + MAX_ADD_PER_CALL]], source, NOW)
        assert book.new_count <= NEW_CAPACITY
    for address in rng.sample(list(addresses), 3000):
        book.good(address, NOW)
    assert book.tried_count > 1000
    assert_consistent(book)


def test_one_source_group_fills_at_most_64_new_buckets() -> None:
    book = new_book(MANY_GROUPS)
    attacker = ip4(11, 0, 0, 1)
    add_all(book, (net10(n * 256) for n in range(20_000)), attacker)
    buckets: set[int] = set()
    for n in range(20_000):
        info = book.info(net10(n * 256))
        if info is not None:
            buckets.update(info.buckets)
    assert NEW_BUCKETS_PER_SOURCE_GROUP // 2 < len(buckets) <= NEW_BUCKETS_PER_SOURCE_GROUP
    assert len(book) <= NEW_BUCKETS_PER_SOURCE_GROUP * BUCKET_SIZE  # of 65,536
    assert_consistent(book)


def test_one_group_fills_at_most_8_tried_buckets() -> None:
    book = new_book()  # /16 groups: all of 10.1.0.0/16 is one group
    addresses = [ip4(10, 1, n >> 8, n & 0xFF) for n in range(1, 3001)]
    for index, address in enumerate(addresses):  # one source group each, to fill "new"
        book.add([entry(address)], ip4(20 + index // 256, index % 256, 0, 1), NOW)
    for address in addresses:
        book.good(address, NOW)
    tried = [info for a in addresses if (info := book.info(a)) is not None and info.in_tried]
    assert len({info.buckets[0] for info in tried}) <= TRIED_BUCKETS_PER_GROUP
    assert BUCKET_SIZE < book.tried_count <= TRIED_BUCKETS_PER_GROUP * BUCKET_SIZE
    assert book.collision_count == MAX_TRIED_COLLISIONS  # many more collided
    assert_consistent(book)


def test_an_address_sits_in_at_most_8_new_buckets() -> None:
    book = new_book(MANY_GROUPS)
    address = net10(5)
    for n in range(400):  # relayed news, each newer, from a new source group each
        seen = NOW + n * 2 * DAY
        book.add([entry(address, seen)], ip4(11, n >> 8, n & 0xFF, 1), seen, 2 * HOUR)
    info = book.info(address)
    assert info is not None
    assert 2 <= info.ref_count <= NEW_BUCKETS_PER_ADDRESS
    assert len(set(info.buckets)) == info.ref_count
    assert_consistent(book)


def test_the_key_decides_the_buckets() -> None:
    one, other = new_book(key=KEY), new_book(key=bytes(32))
    addresses = [net10(n * 65536) for n in range(40)]
    add_all(one, addresses)
    add_all(other, addresses)
    differing = sum(one.info(a) != other.info(a) for a in addresses)
    assert differing > 30


def test_the_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        AddressBook(bytes(16), GroupPolicy(), random.Random(1))


# -- connection outcomes -------------------------------------------------------------------


def test_good_moves_an_address_to_tried_and_records_its_identity() -> None:
    book = new_book()
    address = net10(1)
    book.add([entry(address)], None, NOW)
    assert book.good(address, NOW + 10, node_id=NODE_ID)
    info = book.info(address)
    assert info is not None
    assert (info.in_tried, info.ref_count, info.last_success, info.node_id) == (
        True,
        0,
        NOW + 10,
        NODE_ID,
    )
    assert (book.new_count, book.tried_count) == (0, 1)
    assert book.select(NOW, new_only=True) is None
    assert not book.good(net10(2), NOW)  # unknown


def test_gossip_does_not_replace_a_known_identity() -> None:
    book = new_book()
    address = net10(1)
    book.add([entry(address, NOW - DAY, node_id=NODE_ID)], None, NOW)
    book.add([entry(address, NOW, node_id=bytes([9]) * 32)], None, NOW)
    assert info_of(book, address).node_id == NODE_ID


def test_failures_count_once_between_successes_anywhere() -> None:
    book = new_book()
    address, elsewhere = net10(1), net10(70_000)
    book.add([entry(address), entry(elsewhere)], None, NOW)
    for n in range(3):
        book.attempt(address, NOW + n)
    info = info_of(book, address)
    assert (info.attempts, info.last_try) == (1, NOW + 2)
    for n in range(3, 5):
        book.good(elsewhere, NOW + 10 * n)  # we are online after all
        book.attempt(address, NOW + 10 * n + 1)
    book.attempt(address, NOW + 100, count_failure=False)
    info = info_of(book, address)
    assert (info.attempts, info.last_try) == (3, NOW + 100)


def test_connected_refreshes_seen_at_most_every_20_minutes() -> None:
    book = new_book()
    address = net10(1)
    book.add([entry(address, NOW)], None, NOW)
    book.connected(address, NOW + 19 * MINUTE)
    assert info_of(book, address).seen == NOW
    book.connected(address, NOW + 21 * MINUTE)
    assert info_of(book, address).seen == NOW + 21 * MINUTE
    book.set_services(address, 9)
    assert info_of(book, address).services == 9


# -- test-before-evict ---------------------------------------------------------------------


def test_a_collision_keeps_a_recently_good_entry() -> None:
    book, old, new = book_with_collision(NOW, NOW + HOUR)
    assert book.select_tried_collision() == book.info(old)
    assert book.resolve_collisions(NOW + 2 * HOUR) == 0
    assert info_of(book, old).in_tried
    assert not info_of(book, new).in_tried
    assert book.collision_count == 0
    assert_consistent(book)


def test_a_collision_replaces_an_entry_that_fails_its_test() -> None:
    collided = NOW + 5 * HOUR
    book, old, new = book_with_collision(NOW, collided)
    assert book.resolve_collisions(collided + MINUTE) == 0  # untested yet: wait
    assert book.collision_count == 1
    book.attempt(old, collided + 2 * MINUTE)  # the feeler goes out ...
    assert book.resolve_collisions(collided + 2 * MINUTE + 30) == 0  # ... and gets a minute
    assert book.resolve_collisions(collided + 4 * MINUTE) == 1  # ... which it did not use
    assert info_of(book, new).in_tried
    old_info = info_of(book, old)
    assert (old_info.in_tried, old_info.ref_count) == (False, 1)
    assert book.collision_count == 0
    assert_consistent(book)


def test_a_collision_keeps_an_entry_that_passes_its_test() -> None:
    collided = NOW + 5 * HOUR
    book, old, new = book_with_collision(NOW, collided)
    book.attempt(old, collided + MINUTE)
    book.good(old, collided + MINUTE + 2)
    assert book.resolve_collisions(collided + TEST_WINDOW + MINUTE) == 0
    assert info_of(book, old).in_tried
    assert not info_of(book, new).in_tried


def test_an_untested_collision_replaces_after_the_test_window() -> None:
    collided = NOW + 5 * HOUR
    book, _, new = book_with_collision(NOW, collided)
    assert book.resolve_collisions(collided + TEST_WINDOW - MINUTE) == 0
    assert book.resolve_collisions(collided + TEST_WINDOW + MINUTE) == 1
    assert info_of(book, new).in_tried


# -- selection -----------------------------------------------------------------------------


def test_select_finds_a_lone_entry_quickly_even_when_it_looks_bad() -> None:
    book = new_book()
    address = net10(1)
    book.add([entry(address)], None, NOW)
    elsewhere = net10(70_000)
    book.add([entry(elsewhere)], None, NOW)
    for n in range(12):  # 12 counted failures: the lowest chance there is
        book.good(elsewhere, NOW + 10 * n)
        book.attempt(address, NOW + 10 * n + 1)
    book.good(elsewhere, NOW + 500)  # elsewhere is in tried; address alone in new
    started = time.perf_counter()
    for _ in range(1000):
        assert book.select(NOW + 500, new_only=True) == book.info(address)
    assert time.perf_counter() - started < 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("agt"), st.integers(0, 30)), max_size=60))
def test_select_returns_an_entry_whenever_the_book_has_one(
    operations: list[tuple[str, int]],
) -> None:
    book = new_book(seed=len(operations))
    for step, (operation, n) in enumerate(operations):
        address = ip4(10, n % 3, n, 1)
        now = NOW + step * MINUTE
        if operation == "a":
            book.add([entry(address, now)], ip4(11, n, 0, 1), now)
        elif operation == "g":
            book.good(address, now)
        else:
            book.attempt(address, now)
        chosen = book.select(now)
        assert (chosen is None) == (len(book) == 0)
        assert chosen is None or chosen.address in book
    assert_consistent(book)


def test_select_draws_tried_and_new_evenly() -> None:
    book = new_book(seed=4)
    tried, fresh = net10(1), net10(70_000)
    book.add([entry(tried), entry(fresh)], None, NOW)
    book.good(tried, NOW - HOUR)
    picks = [book.select(NOW) for _ in range(2000)]
    share = sum(p is not None and p.address == tried for p in picks) / len(picks)
    assert 0.45 < share < 0.55


def test_select_shuns_an_entry_tried_minutes_ago() -> None:
    book = new_book(seed=5)
    recent, rested = net10(1), net10(70_000)
    book.add([entry(recent), entry(rested)], None, NOW)
    book.attempt(recent, NOW - MINUTE, count_failure=False)
    picks = [book.select(NOW) for _ in range(2000)]
    share = sum(p is not None and p.address == recent for p in picks) / len(picks)
    assert share < 0.05


# -- GetAddr -------------------------------------------------------------------------------


def test_get_addr_returns_23_percent() -> None:
    book = new_book(MANY_GROUPS)
    add_all(book, (net10(n * 256) for n in range(100)))
    sample = book.get_addr(NOW)
    assert len(sample) == 23
    assert len({e.address for e in sample}) == 23
    assert all(e.address in book and e.seen == NOW for e in sample)


def test_get_addr_returns_at_most_1000() -> None:
    book = new_book(MANY_GROUPS)
    add_all(book, (net10(n * 256) for n in range(5000)), None)
    assert len(book) > 4400  # 23% of it is over 1,000
    assert len(book.get_addr(NOW)) == GETADDR_MAX_COUNT
    assert len(book.get_addr(NOW, max_count=10)) == 10


def test_get_addr_skips_terrible_entries() -> None:
    book = new_book(MANY_GROUPS)
    fresh = [net10(n * 256) for n in range(100)]
    stale = [net10(n * 256) for n in range(100, 200)]
    failing = [net10(n * 256) for n in range(200, 210)]
    add_all(book, fresh + failing)
    add_all(book, stale, now=NOW - 31 * DAY)
    for n in range(3):  # three counted failures and never a success
        book.good(fresh[0], NOW - HOUR + n)
        for address in failing:
            book.attempt(address, NOW - HOUR + n)
    sample = {e.address for e in book.get_addr(NOW, max_percent=100)}
    assert sample == set(fresh)


# -- persistence ---------------------------------------------------------------------------


def populated_book() -> tuple[AddressBook, list[NetAddress]]:
    book = new_book(MANY_GROUPS, seed=9)
    rng = random.Random(9)
    addresses = [net10(n) for n in rng.sample(range(1, 1 << 24), 3000)]
    for index in range(0, 3000, 300):
        add_all(book, addresses[index : index + 300], ip4(11, index // 300, 0, 1))
    # relayed again later by another peer: some entries gain a second reference
    add_all(book, addresses[:1000], ip4(12, 0, 0, 1), now=NOW + 2 * DAY, time_penalty=2 * HOUR)
    for address in addresses[::7]:
        book.attempt(address, NOW + 3 * DAY)
        book.good(address, NOW + 3 * DAY + 1, node_id=NODE_ID)
    return book, addresses


def test_to_bytes_from_bytes_round_trip() -> None:
    book, addresses = populated_book()
    infos = {a: book.info(a) for a in addresses}
    assert book.tried_count > 300
    assert book.new_count > 2000
    assert any(info is not None and info.ref_count > 1 for info in infos.values())
    data = book.to_bytes()
    loaded = AddressBook.from_bytes(data, MANY_GROUPS, random.Random(1))
    assert (len(loaded), loaded.new_count, loaded.tried_count) == (
        len(book),
        book.new_count,
        book.tried_count,
    )
    assert loaded.skipped_on_load == 0
    assert {a: loaded.info(a) for a in addresses} == infos
    assert loaded.to_bytes() == data
    assert_consistent(loaded)


def test_loading_skips_what_the_policy_forbids_duplicates_and_bad_buckets() -> None:
    local, public = net10(1), ip4(8, 8, 8, 8)

    def stored(address: NetAddress, buckets: Sequence[int]) -> StoredEntry:
        return StoredEntry(address, b"", 1, NOW, 0, 0, 0, b"\x04\x0b", False, list(buckets))

    data = encode_book(
        StoredBook(
            KEY,
            [stored(local, [1]), stored(public, [60_000]), stored(public, [2]), stored(public, [])],
        )
    )
    book = AddressBook.from_bytes(data, GroupPolicy(allow_local=False), random.Random(1))
    assert local not in book
    assert book.skipped_on_load == 3  # the local one, and the public one twice more
    assert info_of(book, public).ref_count == 1  # there is no bucket 60,000: its home bucket
    assert_consistent(book)


def small_book_bytes() -> bytes:
    book = new_book()
    add_all(book, [net10(1), net10(70_000)])
    book.good(net10(1), NOW)
    return book.to_bytes()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data[:-1],
        lambda data: data + b"\x00",
        lambda data: data[:3] + data[4:],
        lambda data: b"\x00" * 100,
    ],
)
def test_damaged_bytes_raise_the_typed_error(damage: Callable[[bytes], bytes]) -> None:
    with pytest.raises(AddressBookError) as caught:
        AddressBook.from_bytes(damage(small_book_bytes()), GroupPolicy(), random.Random(1))
    assert isinstance(caught.value, MeshchainError)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_flipped_byte_is_detected(data: st.DataObject) -> None:
    saved = small_book_bytes()
    position = data.draw(st.integers(0, len(saved) - 1))
    flip = data.draw(st.integers(1, 255))
    damaged = saved[:position] + bytes([saved[position] ^ flip]) + saved[position + 1 :]
    with pytest.raises(AddressBookError):
        AddressBook.from_bytes(damaged, GroupPolicy(), random.Random(1))


def test_an_unknown_version_is_refused() -> None:
    saved = small_book_bytes()
    assert saved[1] == addrbook_codec.FORMAT_VERSION
    with pytest.raises(AddressBookError, match="unknown format version 2"):
        AddressBook.from_bytes(saved[:1] + b"\x02" + saved[2:], GroupPolicy(), random.Random(1))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_loading(data: bytes) -> None:
    try:
        book = AddressBook.from_bytes(data, GroupPolicy(), random.Random(1))
    except AddressBookError:
        return
    assert_consistent(book)


# -- sans-IO ---------------------------------------------------------------------------------

FORBIDDEN_MODULES = {"asyncio", "socket", "time", "threading", "selectors"}


@pytest.mark.parametrize(
    "module", [addrbook_module, addrbook_codec, addrbook_entry, addrbook_tables]
)
def test_addrbook_modules_are_sans_io(module: ModuleType) -> None:
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "random":
            assert node.attr == "Random", "only an injected random.Random may be used"
    assert not imported & FORBIDDEN_MODULES

"""Where the address book puts an address: keyed bucket hashes and sparse bucket tables.

Bitcoin Core's addrman layout. Buckets are chosen by a keyed hash of address *groups*,
so one network (or one source network feeding us addresses) reaches only a few buckets
however many addresses it owns, and without the node's secret key nobody can aim an
address at a chosen slot.
"""

from __future__ import annotations

import hashlib
import random

from meshchain.core.peers.address import NetAddress

# Bitcoin Core's addrman: 2^10 new buckets, 2^8 tried buckets, 2^6 slots in each.
NEW_BUCKET_COUNT = 1024
TRIED_BUCKET_COUNT = 256
BUCKET_SIZE = 64
# Bitcoin's ADDRMAN_NEW_BUCKETS_PER_SOURCE_GROUP: the new buckets one source group can fill.
NEW_BUCKETS_PER_SOURCE_GROUP = 64
# Bitcoin's ADDRMAN_TRIED_BUCKETS_PER_GROUP: the tried buckets one address group can fill.
TRIED_BUCKETS_PER_GROUP = 8
# blake2b's key is at most 64 bytes; Bitcoin's nKey is a 256-bit secret.
KEY_SIZE = 32
# Bitcoin's GetCheapHash: 64 bits of the keyed hash pick a bucket or slot.
HASH_SIZE = 8


def _address_key(address: NetAddress) -> bytes:
    return bytes([len(address.ip)]) + address.ip + address.port.to_bytes(2, "big")


def _framed(*parts: bytes) -> bytes:
    """Length-prefixed concatenation, so distinct part lists never hash alike."""
    return b"".join(bytes([len(part)]) + part for part in parts)


class Placement:
    """The keyed hashes that map an address to its buckets and slots.

    A slot is `bucket * BUCKET_SIZE + position`; each hash has its own blake2b
    personalisation so no two of them can be made to agree.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"the address book key is {KEY_SIZE} bytes, not {len(key)}")
        self._key = key

    def _hash(self, purpose: bytes, data: bytes) -> int:
        digest = hashlib.blake2b(data, key=self._key, digest_size=HASH_SIZE, person=purpose)
        return int.from_bytes(digest.digest(), "little")

    def new_bucket(self, group: bytes, source_group: bytes) -> int:
        """Bitcoin's GetNewBucket: one of 64 buckets reserved (by hash) for the source group."""
        spread = self._hash(b"mc-new-spread", _framed(group, source_group))
        choice = spread % NEW_BUCKETS_PER_SOURCE_GROUP
        return self._hash(b"mc-new-bucket", _framed(source_group, bytes([choice]))) % (
            NEW_BUCKET_COUNT
        )

    def tried_bucket(self, address: NetAddress, group: bytes) -> int:
        """Bitcoin's GetTriedBucket: one of 8 buckets reserved (by hash) for the group."""
        choice = self._hash(b"mc-tried-spread", _address_key(address)) % TRIED_BUCKETS_PER_GROUP
        return self._hash(b"mc-tried-bucket", _framed(group, bytes([choice]))) % (
            TRIED_BUCKET_COUNT
        )

    def new_slot(self, bucket: int, address: NetAddress) -> int:
        data = bucket.to_bytes(2, "big") + _address_key(address)
        return bucket * BUCKET_SIZE + self._hash(b"mc-new-slot", data) % BUCKET_SIZE

    def tried_slot(self, bucket: int, address: NetAddress) -> int:
        data = bucket.to_bytes(2, "big") + _address_key(address)
        return bucket * BUCKET_SIZE + self._hash(b"mc-tried-slot", data) % BUCKET_SIZE


class BucketTable:
    """Slots of one table, stored sparsely: memory follows the entries, not the capacity
    (a full-size empty table would cost half a megabyte, and the simulator runs hundreds).

    It also keeps the list of occupied buckets, so a random occupied bucket is O(1):
    Bitcoin's Select draws buckets uniformly and retries empty ones, which is the same
    distribution but takes ~1,000 draws when a single entry sits in 1,024 buckets.
    """

    __slots__ = ("_bucket_fill", "_bucket_index", "_occupied_buckets", "_slots", "bucket_count")

    def __init__(self, bucket_count: int) -> None:
        self.bucket_count = bucket_count
        self._slots: dict[int, NetAddress] = {}
        self._bucket_fill: dict[int, int] = {}
        self._occupied_buckets: list[int] = []
        self._bucket_index: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, slot: int) -> NetAddress | None:
        return self._slots.get(slot)

    def put(self, slot: int, address: NetAddress) -> None:
        """Fill an empty slot (the caller clears an occupied one first)."""
        if slot in self._slots:
            raise RuntimeError(f"slot {slot} is occupied")
        self._slots[slot] = address
        bucket = slot // BUCKET_SIZE
        fill = self._bucket_fill.get(bucket, 0)
        if fill == 0:
            self._bucket_index[bucket] = len(self._occupied_buckets)
            self._occupied_buckets.append(bucket)
        self._bucket_fill[bucket] = fill + 1

    def remove(self, slot: int) -> NetAddress:
        address = self._slots.pop(slot)
        bucket = slot // BUCKET_SIZE
        fill = self._bucket_fill[bucket] - 1
        if fill:
            self._bucket_fill[bucket] = fill
            return address
        del self._bucket_fill[bucket]
        index = self._bucket_index.pop(bucket)
        last = self._occupied_buckets.pop()
        if last != bucket:
            self._occupied_buckets[index] = last
            self._bucket_index[last] = index
        return address

    def random_address(self, rng: random.Random) -> NetAddress:
        """Bitcoin's bucket walk: a random occupied bucket, the first entry from a random
        position on. The table must not be empty."""
        bucket = self._occupied_buckets[rng.randrange(len(self._occupied_buckets))]
        start = rng.randrange(BUCKET_SIZE)
        base = bucket * BUCKET_SIZE
        for step in range(BUCKET_SIZE):
            address = self._slots.get(base + (start + step) % BUCKET_SIZE)
            if address is not None:
                return address
        raise RuntimeError(f"bucket {bucket} is listed as occupied but is empty")

    def items(self) -> list[tuple[int, NetAddress]]:
        return list(self._slots.items())

    def occupied_buckets(self) -> set[int]:
        return set(self._occupied_buckets)

    def bookkeeping_problems(self) -> list[str]:
        """Disagreements between the slots and the occupied-bucket index (for tests)."""
        fill: dict[int, int] = {}
        for slot in self._slots:
            fill[slot // BUCKET_SIZE] = fill.get(slot // BUCKET_SIZE, 0) + 1
        problems = []
        if fill != self._bucket_fill:
            problems.append("bucket fill counts disagree with the slots")
        if set(fill) != set(self._occupied_buckets) or len(self._occupied_buckets) != len(fill):
            problems.append("occupied-bucket list disagrees with the slots")
        if any(self._occupied_buckets[i] != b for b, i in self._bucket_index.items()):
            problems.append("occupied-bucket index is stale")
        if any(not 0 <= slot < self.bucket_count * BUCKET_SIZE for slot in self._slots):
            problems.append("a slot is outside the table")
        return problems

"""The peer state a node keeps across restarts, in its chain store's meta table.

The address book, the ban list and the anchors (the block-relay-only peers of the last
run, redialled first: Bitcoin's anchors.dat) are each one versioned blob. A blob that
does not decode is dropped with the rest of the node unharmed: a node can always
rebuild its peer state from its bootstrap peers, never its chain.
"""

from __future__ import annotations

import random

from meshchain.core.peers.addrbook import AddressBook, AddressBookError
from meshchain.core.peers.address import GroupPolicy, NetAddress, checked_address
from meshchain.core.peers.bans import BanList, BanListError
from meshchain.core.store import ChainStore, WriteBatch
from meshchain.core.wire.codec import Codec, encode
from meshchain.errors import DecodeError

BOOK_KEY = "peers/addrbook"
BANS_KEY = "peers/bans"
ANCHORS_KEY = "peers/anchors"
MAX_ANCHORS = 2  # Bitcoin MAX_BLOCK_RELAY_ONLY_ANCHORS
_ANCHORS_CODEC: Codec[list[NetAddress]] = Codec(list[NetAddress], 1024)


class PeerStateStore:
    def __init__(self, store: ChainStore) -> None:
        self._store = store
        self.dropped: list[str] = []  # blobs that did not decode, for the log

    def load_book(self, policy: GroupPolicy, rng: random.Random) -> AddressBook:
        data = self._store.get_meta(BOOK_KEY)
        if data:
            try:
                return AddressBook.from_bytes(data, policy, rng)
            except AddressBookError as error:
                self.dropped.append(f"address book: {error}")
        return AddressBook(rng.randbytes(32), policy, rng)

    def load_bans(self) -> BanList:
        data = self._store.get_meta(BANS_KEY)
        if data:
            try:
                return BanList.from_bytes(data)
            except BanListError as error:
                self.dropped.append(f"ban list: {error}")
        return BanList()

    def take_anchors(self, policy: GroupPolicy) -> list[NetAddress]:
        """The anchors saved at the last shutdown, used once (then forgotten). Only
        addresses `policy` lets us dial: the blob is as untrusted as the disk."""
        data = self._store.get_meta(ANCHORS_KEY)
        if not data:
            return []
        self._store.write(WriteBatch(meta={ANCHORS_KEY: b""}))
        try:
            stored = _ANCHORS_CODEC.decode(data)
        except DecodeError as error:
            self.dropped.append(f"anchors: {error.reason}")
            return []
        anchors = []
        for address in stored[:MAX_ANCHORS]:
            checked = checked_address(address.ip, address.port)
            if checked is None or not policy.is_usable(checked):
                self.dropped.append(f"anchors: {address.ip.hex()}:{address.port} is unusable")
            else:
                anchors.append(checked)
        return anchors

    def save(self, book: AddressBook, bans: BanList, anchors: list[NetAddress] | None) -> None:
        meta = {BOOK_KEY: book.to_bytes(), BANS_KEY: bans.to_bytes()}
        if anchors is not None:
            meta[ANCHORS_KEY] = encode(anchors[:MAX_ANCHORS])
        self._store.write(WriteBatch(meta=meta))

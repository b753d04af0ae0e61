"""What a misbehaving peer costs it, and the list of IPs we ban or discourage.

Two strengths of punishment, as in Bitcoin Core (banman.h, net_processing.cpp):

- *Discouraged*: we still accept the IP inbound while slots are free, but its
  connections are the first evicted, and we never dial it or gossip its address.
  Automatic: Bitcoin discourages any peer that misbehaves.
- *Banned*: no connection either way. Bitcoin bans only by hand (24 h by default); we
  also ban for the one offence no honest node can commit (a forged consensus proof).

Some offences only cost the connection. One table, `OFFENCES`, says which is which, so
the policy can be read (and argued with) in one place. Entries are per IP, not per
port: a second port on the same host is the same peer. Times are seconds on the
caller's clock; a list that is persisted should use wall-clock time.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from dataclasses import dataclass
from typing import Annotated

import msgspec

from meshchain.core.peers.address import IPV4_MAPPED_PREFIX, AddressError
from meshchain.core.wire.codec import Codec, WireStruct, encode
from meshchain.errors import DecodeError, StoreError

# Bitcoin's DEFAULT_MISBEHAVING_BANTIME (banman.h): a manual ban lasts 24 h.
DEFAULT_BAN_SECONDS = 24 * 60 * 60
# Bitcoin keeps a discouraged address until its rolling filter (50,000 entries) forgets
# it; we make that a fixed 24 h, the same as a ban.
DISCOURAGEMENT_SECONDS = 24 * 60 * 60
# Ours: for offences that an honest peer that is overloaded or buggy could commit.
SHORT_DISCOURAGEMENT_SECONDS = 60 * 60
# Chia's RATE_LIMITER_BAN_SECONDS: a peer over its rate limits stays away 5 minutes.
RATE_LIMIT_DISCOURAGEMENT_SECONDS = 5 * 60
# Ours: bounds the memory an attacker with many IPs can make us spend on them.
MAX_BAN_ENTRIES = 10_000
# Ours: reasons are for people reading the list; longer ones are cut.
MAX_BAN_REASON_LENGTH = 256
# Version of the persisted encoding; from_bytes refuses others.
BAN_LIST_VERSION = 1
# Ours: an encoded entry is at most ~1,060 bytes (a 16-byte IP, a float, and a reason of
# 256 characters of up to 4 UTF-8 bytes each).
MAX_BAN_LIST_BYTES = 1_100 * MAX_BAN_ENTRIES


class BanListError(StoreError):
    """A persisted ban list that cannot be read."""


class PenaltyAction(enum.Enum):
    DISCONNECT = "disconnect"
    DISCOURAGE = "discourage"
    BAN = "ban"


@dataclass(frozen=True, slots=True)
class Penalty:
    """What an offence costs: the action, how long (0 for a disconnect), and why."""

    action: PenaltyAction
    duration: float
    description: str

    def __post_init__(self) -> None:
        if (self.action is PenaltyAction.DISCONNECT) != (self.duration == 0):
            raise ValueError("a disconnect lasts 0 s; a discouragement or ban longer")


class Offence(enum.Enum):
    """Things a peer can do wrong, as the protocol code detects them."""

    INVALID_TRANSACTION = "invalid_transaction"
    INVALID_BLOCK = "invalid_block"
    INVALID_CONSENSUS_PROOF = "invalid_consensus_proof"
    MALFORMED_MESSAGE = "malformed_message"
    OVERSIZED_MESSAGE = "oversized_message"
    DUPLICATE_HELLO = "duplicate_hello"
    ADDR_FLOOD = "addr_flood"
    BAD_ADDRESSES = "bad_addresses"
    GETADDR_SPAM = "getaddr_spam"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    UNREQUESTED_DATA = "unrequested_data"
    STALLING = "stalling"
    LOW_WORK_HEADERS = "low_work_headers"
    PROTOCOL_VIOLATION = "protocol_violation"


def _disconnect(description: str) -> Penalty:
    return Penalty(PenaltyAction.DISCONNECT, 0, description)


def _discourage(description: str, seconds: float = DISCOURAGEMENT_SECONDS) -> Penalty:
    return Penalty(PenaltyAction.DISCOURAGE, seconds, description)


OFFENCES: dict[Offence, Penalty] = {
    # Bitcoin: a transaction failing consensus checks (TX_CONSENSUS) is Misbehaving. Only
    # for a bad signature or malformed body: a stale nonce or a spent balance is a race
    # any honest relay can lose, and is not an offence.
    Offence.INVALID_TRANSACTION: _discourage("invalid transaction (bad signature or malformed)"),
    # Bitcoin: BLOCK_CONSENSUS / BLOCK_MUTATED are Misbehaving.
    Offence.INVALID_BLOCK: _discourage("invalid block"),
    # Ours: every node checks the authority signature before relaying a block, so a forged
    # one never comes from an honest peer; Bitcoin only discourages a bad header.
    Offence.INVALID_CONSENSUS_PROOF: Penalty(
        PenaltyAction.BAN, DEFAULT_BAN_SECONDS, "invalid block header or consensus proof"
    ),
    # Ours: our encoding is canonical and new message types wait for a newer protocol
    # version in Hello, so a correct peer of any version never sends one we cannot decode.
    Offence.MALFORMED_MESSAGE: _discourage("undecodable or non-canonical message"),
    # Bitcoin disconnects on a payload over MAX_PROTOCOL_MESSAGE_LENGTH; the 4 MB cap is
    # a protocol constant, so we discourage too.
    Offence.OVERSIZED_MESSAGE: _discourage("message over the size limit"),
    # Bitcoin ignores a redundant version message; a Hello out of turn is a session bug
    # rather than an attack, so it costs the connection only.
    Offence.DUPLICATE_HELLO: _disconnect("unsolicited or duplicate Hello"),
    # Bitcoin: an addr message of more than MAX_ADDR_TO_SEND entries is Misbehaving.
    Offence.ADDR_FLOOD: _discourage("address flood"),
    # Ours: addresses far in the future or unroutable, in bulk, poison the address book
    # (the eclipse attack's first step), but a misconfigured devnet node sends them too.
    Offence.BAD_ADDRESSES: _discourage(
        "absurd timestamps or unroutable addresses in bulk", SHORT_DISCOURAGEMENT_SECONDS
    ),
    # Ours: we answer one GetAddr per connection; Bitcoin ignores the rest, we hang up.
    Offence.GETADDR_SPAM: _disconnect("repeated GetAddr"),
    # Chia bans a peer over its rate limits for RATE_LIMITER_BAN_SECONDS (300 s).
    Offence.RATE_LIMIT_EXCEEDED: _discourage(
        "rate limit exceeded", RATE_LIMIT_DISCOURAGEMENT_SECONDS
    ),
    # Ours: relay is push, so unrequested data is normal; only a flood of it is charged.
    Offence.UNREQUESTED_DATA: _discourage(
        "flood of unrequested or duplicate data", SHORT_DISCOURAGEMENT_SECONDS
    ),
    # Bitcoin: a stalling block download or ping timeout is a disconnect, not Misbehaving.
    Offence.STALLING: _disconnect("stalling (request or ping timed out)"),
    # Ours: a peer whose header chain stays lighter than our tip for more headers than
    # sync keeps in memory. Bitcoin (since 2022) never stores such a chain and just stops
    # syncing it; we cut the peer off and keep it away a while, since an honest node on
    # a minority fork that long is rare and a cheap header flood is the usual cause.
    Offence.LOW_WORK_HEADERS: _discourage(
        "header chain with too little work", SHORT_DISCOURAGEMENT_SECONDS
    ),
    # Bitcoin: protocol violations are Misbehaving.
    Offence.PROTOCOL_VIOLATION: _discourage("protocol violation"),
}


class BanKind(enum.Enum):
    BANNED = 1
    DISCOURAGED = 2


@dataclass(frozen=True, slots=True)
class BanEntry:
    """One live entry as the API shows it."""

    ip: str
    until: float
    reason: str
    kind: BanKind


def normalize_ip(ip: bytes) -> bytes:
    """The key for an IP: 4 or 16 bytes, an IPv4-mapped IPv6 address folded to IPv4,
    so a ban on 1.2.3.4 cannot be dodged by connecting as ::ffff:1.2.3.4."""
    if len(ip) == 16 and ip.startswith(IPV4_MAPPED_PREFIX):
        return ip[12:]
    if len(ip) not in (4, 16):
        raise AddressError(f"an IP is 4 or 16 bytes, not {len(ip)}")
    return bytes(ip)


def ip_text(ip: bytes) -> str:
    return str(ipaddress.ip_address(ip))


class _StoredEntry(WireStruct, frozen=True):
    ip: Annotated[bytes, msgspec.Meta(min_length=4, max_length=16)]
    kind: BanKind
    until: float
    reason: Annotated[str, msgspec.Meta(max_length=MAX_BAN_REASON_LENGTH)]


class _StoredVersion(msgspec.Struct, array_like=True, frozen=True):
    """The version alone: read first, so a newer file is refused as such."""

    version: int


class _StoredBanList(WireStruct, frozen=True):
    version: int
    entries: Annotated[list[_StoredEntry], msgspec.Meta(max_length=MAX_BAN_ENTRIES)]


_VERSION_CODEC = msgspec.msgpack.Decoder(_StoredVersion)
_LIST_CODEC: Codec[_StoredBanList] = Codec(_StoredBanList, MAX_BAN_LIST_BYTES)


class BanList:
    """Banned and discouraged IPs with expiry times, bounded in size.

    One entry per IP. A ban outranks a discouragement: discouraging a banned IP changes
    nothing, banning a discouraged one replaces the entry. `ban` sets the expiry it is
    given (a person may shorten a ban); `discourage` only ever extends one. When full,
    a new entry pushes out the discouragement expiring soonest, a ban only if no
    discouragement is left, so a flood of misbehaving IPs cannot wash out manual bans.
    """

    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int = MAX_BAN_ENTRIES) -> None:
        if not 1 <= max_entries <= MAX_BAN_ENTRIES:
            raise ValueError(f"max_entries must be 1..{MAX_BAN_ENTRIES}")
        self.max_entries = max_entries
        self._entries: dict[bytes, _StoredEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def ban(self, ip: bytes, until: float, reason: str) -> None:
        """Refuse every connection to or from `ip` until `until`."""
        key = normalize_ip(ip)
        self._store(_StoredEntry(key, BanKind.BANNED, until, reason[:MAX_BAN_REASON_LENGTH]))

    def discourage(self, ip: bytes, until: float, reason: str) -> None:
        """Evict `ip` first and never dial it until `until` (extends, never shortens)."""
        key = normalize_ip(ip)
        current = self._entries.get(key)
        if current is not None and (current.kind is BanKind.BANNED or current.until >= until):
            return
        entry = _StoredEntry(key, BanKind.DISCOURAGED, until, reason[:MAX_BAN_REASON_LENGTH])
        self._store(entry)

    def punish(self, ip: bytes, offence: Offence, now: float) -> Penalty:
        """Record what `OFFENCES` says the offence costs; the caller still disconnects."""
        penalty = OFFENCES[offence]
        key = normalize_ip(ip)
        current = self._entries.get(key)
        if current is not None and current.until <= now:
            del self._entries[key]  # expired, not yet swept: it must not outrank this one
            current = None
        if penalty.action is PenaltyAction.BAN:
            until = now + penalty.duration
            if current is None or current.kind is not BanKind.BANNED or current.until < until:
                self.ban(ip, until, penalty.description)
        elif penalty.action is PenaltyAction.DISCOURAGE:
            self.discourage(ip, now + penalty.duration, penalty.description)
        return penalty

    def is_banned(self, ip: bytes, now: float) -> bool:
        entry = self._lookup(ip)
        return entry is not None and entry.kind is BanKind.BANNED and entry.until > now

    def is_discouraged(self, ip: bytes, now: float) -> bool:
        """Discouraged or worse: a banned IP is treated as discouraged too."""
        entry = self._lookup(ip)
        return entry is not None and entry.until > now

    def unban(self, ip: bytes) -> bool:
        """Forget `ip` (ban or discouragement); whether there was an entry."""
        entry = self._lookup(ip)
        return entry is not None and self._entries.pop(entry.ip, None) is not None

    def _lookup(self, ip: bytes) -> _StoredEntry | None:
        """Queries take any bytes: an IP that cannot be one (a peer without an address)
        is simply in no list, where ban() and discourage() would refuse it."""
        if len(ip) not in (4, 16):
            return None
        return self._entries.get(normalize_ip(ip))

    def entries(self, now: float) -> list[BanEntry]:
        """Live entries, soonest to expire first."""
        live = sorted(
            (e for e in self._entries.values() if e.until > now), key=lambda e: (e.until, e.ip)
        )
        return [BanEntry(ip_text(e.ip), e.until, e.reason, e.kind) for e in live]

    def sweep(self, now: float) -> int:
        """Drop expired entries; how many went."""
        expired = [ip for ip, entry in self._entries.items() if entry.until <= now]
        for ip in expired:
            del self._entries[ip]
        return len(expired)

    def _store(self, entry: _StoredEntry) -> None:
        if entry.ip not in self._entries and len(self._entries) >= self.max_entries:
            victim = min(self._entries.values(), key=_eviction_order)
            if _eviction_order(entry) < _eviction_order(victim):
                return  # the newcomer is the least worth keeping
            del self._entries[victim.ip]
        self._entries[entry.ip] = entry

    def to_bytes(self) -> bytes:
        """The list as a versioned msgpack document (expired entries included)."""
        entries = sorted(self._entries.values(), key=lambda e: e.ip)
        return encode(_StoredBanList(BAN_LIST_VERSION, entries))

    @classmethod
    def from_bytes(cls, data: bytes, max_entries: int = MAX_BAN_ENTRIES) -> BanList:
        """A list from `to_bytes`; BanListError if the data is corrupt or of another version."""
        try:
            version = _VERSION_CODEC.decode(data).version
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BanListError(f"ban list is corrupt: {exc}") from None
        if version != BAN_LIST_VERSION:
            raise BanListError(f"ban list version {version} is not {BAN_LIST_VERSION}")
        try:
            stored = _LIST_CODEC.decode(data)
        except DecodeError as exc:
            raise BanListError(f"ban list is corrupt: {exc.reason}") from None
        bans = cls(max_entries)
        for entry in stored.entries:
            if len(entry.ip) not in (4, 16) or normalize_ip(entry.ip) != entry.ip:
                raise BanListError(f"ban list is corrupt: bad IP {entry.ip.hex()}")
            if not math.isfinite(entry.until):
                raise BanListError(
                    f"ban list is corrupt: expiry {entry.until} for {entry.ip.hex()}"
                )
            if entry.ip in bans._entries:
                raise BanListError(f"ban list is corrupt: {ip_text(entry.ip)} twice")
            bans._store(entry)
        return bans


def _eviction_order(entry: _StoredEntry) -> tuple[bool, float]:
    """Lowest goes first when the list is full: discouragements, then soonest to expire."""
    return (entry.kind is BanKind.BANNED, entry.until)

"""Rate and bandwidth limits on what a peer may make us do.

Every peer gets one token bucket per kind of message (`RATE_LIMITS`), one bucket of
received bytes, and a bound on the bytes we queue for it. A message over its limit is
dropped and counted; the counts are what metrics show and what the misbehaviour logic
(`bans.py`) charges once a peer is far over. Limits are generous: an honest node under
the simulator's load (tens of transactions a second network-wide, a block every few
seconds) never meets one; they exist to bound the work a flooding peer can cause.

Pure: time arrives as `now` (seconds, any monotonic origin) and nothing here reads a clock.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

from meshchain.core.wire.codec import MAX_MESSAGE_SIZE
from meshchain.core.wire.messages import (
    MAX_ADDR_PER_MESSAGE,
    Addr,
    AnyMessage,
    BlockMessage,
    BlocksNotFound,
    BlockTxn,
    CommitMessage,
    CompactBlock,
    ConsensusStatus,
    EvidenceMessage,
    GetAddr,
    GetBlock,
    GetBlocks,
    GetBlockTxn,
    GetData,
    GetHeaders,
    Headers,
    Inventory,
    NotFound,
    Ping,
    Pong,
    ProposalMessage,
    StemTransaction,
    SyncBlock,
    TransactionMessage,
    Transactions,
    VoteMessage,
)

SECONDS_PER_MINUTE = 60.0

# Bitcoin's MAX_ADDR_RATE_PER_SECOND (net_processing.cpp): addresses processed per second.
MAX_ADDR_RATE_PER_SECOND = 0.1
# Bitcoin's MAX_ADDR_PROCESSING_TOKEN_BUCKET: one full Addr message (MAX_ADDR_TO_SEND).
MAX_ADDR_PROCESSING_TOKEN_BUCKET = MAX_ADDR_PER_MESSAGE

# Chia rate_limit_numbers.py: new/respond_transaction, 5,000 a minute.
TRANSACTIONS_PER_MINUTE = 5000
# Chia counts per one-minute window, so a whole minute's allowance may come at once.
TRANSACTION_BURST = TRANSACTIONS_PER_MINUTE
# Ours: inventories come on trickle timers (a few a second at most from one peer, with
# block announcements); ten a second is far above that and still bounds the work.
INVENTORIES_PER_MINUTE = 600
INVENTORY_BURST = INVENTORIES_PER_MINUTE
# Ours: a peer asks only for what we announced, so as many requests as inventories.
GET_DATA_PER_MINUTE = 600
GET_DATA_BURST = GET_DATA_PER_MINUTE
# Ours: answers to our requests (Transactions, NotFound, BlockTxn). We bound what we ask
# for; unsolicited transactions are also charged by the relay (`txrelay.py`).
RESPONSES_PER_MINUTE = 6_000
RESPONSE_BURST = RESPONSES_PER_MINUTE
# Ours: Dandelion++ stem transactions from one peer. A stem carries only the
# transactions routed through it, a small share of the network's; a stem flood past
# this is dropped and, kept up, punished.
STEM_TRANSACTIONS_PER_MINUTE = 1_000
STEM_BURST = STEM_TRANSACTIONS_PER_MINUTE
# Chia: respond_block, 200 a minute; we produce one every few seconds (~20 a minute).
BLOCKS_PER_MINUTE = 200
# Ours: room to walk back an orphan chain of a few hundred blocks after a partition.
BLOCK_BURST = 500
# Chia: request_blocks, 500 a minute (a peer walking back our chain asks one at a time).
GET_BLOCKS_PER_MINUTE = 500
GET_BLOCK_BURST = GET_BLOCKS_PER_MINUTE
# Ours: a syncing peer sends one GetHeaders per 2,000-header batch and a probe per peer
# and batch; two a second is far above that.
GET_HEADERS_PER_MINUTE = 120
GET_HEADERS_BURST = GET_HEADERS_PER_MINUTE
# Ours: Headers come only as answers to our GetHeaders (one outstanding per peer);
# unrequested ones are ignored, so this only bounds their decoding.
HEADERS_PER_MINUTE = 120
HEADERS_BURST = HEADERS_PER_MINUTE
# Ours: a syncing node asks again whenever 4 of its 16 slots with a peer are free, so a
# node validating 2,000 blocks a second from one peer (several times what ours do,
# docs/sync.md) sends 500 a second. Bitcoin does not limit getdata at all: serving is
# bounded by what the peer reads (the send queue), not by how often it asks.
GET_BLOCKS_REQUESTS_PER_MINUTE = 30_000
GET_BLOCKS_REQUEST_BURST = 2_000
# Ours: SyncBlock and BlocksNotFound answer our GetBlocks (at most 16 outstanding per
# peer, checked by sync before any validation); the limit caps unrequested ones.
SYNC_BLOCKS_PER_MINUTE = 120_000
SYNC_BLOCK_BURST = 2_000
# Chia: request_peers, 10 a minute (we answer one GetAddr per connection anyway).
GET_ADDRS_PER_MINUTE = 10
GET_ADDR_BURST = GET_ADDRS_PER_MINUTE
# Chia: DEFAULT_SETTINGS, 100 a minute, for keep-alives (Ping and Pong).
PINGS_PER_MINUTE = 100
PING_BURST = PINGS_PER_MINUTE
# Ours: BFT proposals, votes, commits and status. Each height a validator set of n sends
# about 2n votes and one proposal per round, each relayed once per peer; 100 validators
# at a block a second is ~12,000 a minute. Bursts cover a catch-up of many commits.
CONSENSUS_PER_MINUTE = 30_000
CONSENSUS_BURST = 5_000
# Chia: DEFAULT_SETTINGS again for the rest (Hello, Goodbye): a handful per session.
OTHER_PER_MINUTE = 100
OTHER_BURST = OTHER_PER_MINUTE

# Ours: one maximum-size block (4 MB) a second from one peer, ~2.4x Chia's aggregate
# non-transaction allowance (NON_TX_MAX_TOTAL_SIZE, 100 MiB a minute).
DEFAULT_PEER_RECEIVE_BYTES_PER_SECOND = float(MAX_MESSAGE_SIZE)
# Ours: no node-wide cap unless the operator sets one, as Bitcoin's -maxuploadtarget is
# off by default; only the operator knows the uplink.
DEFAULT_GLOBAL_RECEIVE_BYTES_PER_SECOND: float | None = None
# Ours: a bandwidth bucket holds one second's allowance but never less than two
# maximum-size messages, so every valid message can be admitted eventually.
MIN_BANDWIDTH_BURST_BYTES = 2 * MAX_MESSAGE_SIZE

# runtime/network.py MAX_SEND_BUFFER (8 MiB, two maximum-size messages): a peer with more
# queued is dropped as too slow (Bitcoin's -maxsendbuffer is 1 MB with smaller messages).
MAX_SEND_QUEUE_BYTES = 8 * 1024 * 1024
# Bitcoin's DEFAULT_MAXSENDBUFFER (1,000 KB): past it, stop serving the peer's requests
# (fPauseSend) until the queue drains, rather than queue more for it.
SEND_QUEUE_PAUSE_BYTES = 1_000_000

# Ours: float refill (0.1 x 10 s) must not refuse a token that is due by rounding.
TOKEN_EPSILON = 1e-9


class TokenBucket:
    """Tokens accrue at `rate` a second up to `capacity`; an action spends them.

    Starts full unless `initial` says otherwise. A clock that goes backwards adds nothing
    and the bucket waits until time passes its latest reading again, so a clock step can
    neither mint tokens nor be counted twice.
    """

    __slots__ = ("_level", "_updated", "capacity", "rate")

    def __init__(
        self, rate: float, capacity: float, now: float, initial: float | None = None
    ) -> None:
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"rate must be finite and >= 0, not {rate}")
        if not (math.isfinite(capacity) and capacity > 0):
            raise ValueError(f"capacity must be finite and > 0, not {capacity}")
        self.rate = rate
        self.capacity = capacity
        self._level = capacity if initial is None else max(0.0, initial)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now <= self._updated:
            return
        if self._level < self.capacity:
            gained = (now - self._updated) * self.rate
            self._level = min(self.capacity, self._level + gained)
        self._updated = now

    def level(self, now: float) -> float:
        """Tokens available at `now`."""
        self._refill(now)
        return self._level

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend `amount` tokens if there are that many; all or nothing.

        The refill is written out here: this runs once per message a node receives.
        """
        level = self._level
        if now > self._updated:
            if level < self.capacity:
                level += (now - self._updated) * self.rate
                if level > self.capacity:  # `min` and `max` written out: no calls
                    level = self.capacity
            self._updated = now
        if level + TOKEN_EPSILON < amount:
            self._level = level
            return False
        level -= amount
        self._level = level if level > 0.0 else 0.0
        return True

    def add(self, amount: float) -> None:
        """Credit tokens beyond the refill, even past `capacity`.

        Bitcoin credits a peer's addr bucket with a whole message when it sends GetAddr,
        bypassing the cap, so the answer is processed in full.
        """
        if amount < 0:
            raise ValueError("add() takes a non-negative amount")
        self._level += amount

    def wait_time(self, now: float, amount: float = 1.0) -> float:
        """Seconds until `amount` tokens are available (inf if never): when to read again."""
        missing = amount - self.level(now)
        if missing <= TOKEN_EPSILON:
            return 0.0
        if amount > max(self.capacity, self._level) or self.rate == 0:
            return math.inf
        return missing / self.rate


class MessageClass(enum.Enum):
    """What a received message is limited as. ADDR_ENTRY counts addresses, not messages."""

    TRANSACTION = "transaction"
    STEM = "stem"
    INVENTORY = "inventory"
    GET_DATA = "get_data"
    RESPONSE = "response"
    BLOCK = "block"
    GET_BLOCK = "get_block"
    GET_HEADERS = "get_headers"
    HEADERS = "headers"
    GET_BLOCKS = "get_blocks"
    SYNC_BLOCK = "sync_block"
    ADDR_ENTRY = "addr_entry"
    GET_ADDR = "get_addr"
    PING = "ping"
    CONSENSUS = "consensus"
    OTHER = "other"


_CLASS_OF_TYPE: dict[type, MessageClass] = {
    TransactionMessage: MessageClass.TRANSACTION,
    BlockMessage: MessageClass.BLOCK,
    CompactBlock: MessageClass.BLOCK,
    StemTransaction: MessageClass.STEM,
    Inventory: MessageClass.INVENTORY,
    GetData: MessageClass.GET_DATA,
    GetBlockTxn: MessageClass.GET_DATA,
    Transactions: MessageClass.RESPONSE,
    NotFound: MessageClass.RESPONSE,
    BlockTxn: MessageClass.RESPONSE,
    GetBlock: MessageClass.GET_BLOCK,
    GetHeaders: MessageClass.GET_HEADERS,
    Headers: MessageClass.HEADERS,
    GetBlocks: MessageClass.GET_BLOCKS,
    SyncBlock: MessageClass.SYNC_BLOCK,
    BlocksNotFound: MessageClass.SYNC_BLOCK,
    Addr: MessageClass.ADDR_ENTRY,
    GetAddr: MessageClass.GET_ADDR,
    Ping: MessageClass.PING,
    Pong: MessageClass.PING,
    ProposalMessage: MessageClass.CONSENSUS,
    VoteMessage: MessageClass.CONSENSUS,
    CommitMessage: MessageClass.CONSENSUS,
    EvidenceMessage: MessageClass.CONSENSUS,
    ConsensusStatus: MessageClass.CONSENSUS,
}


def message_class(message: AnyMessage) -> MessageClass:
    """The limit a message is charged to (a table lookup: it runs for every message)."""
    return _CLASS_OF_TYPE.get(type(message), MessageClass.OTHER)


def message_cost(message: AnyMessage) -> int:
    """Tokens a message spends: one, or one per address for Addr (as Bitcoin counts)."""
    return len(message.entries) if isinstance(message, Addr) else 1


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A sustained rate (per second) and the burst a bucket may hold."""

    rate: float
    burst: float

    @classmethod
    def per_minute(cls, count: float, burst: float) -> RateLimit:
        """Chia states its limits per minute; we refill continuously per second."""
        return cls(count / SECONDS_PER_MINUTE, burst)


RATE_LIMITS: dict[MessageClass, RateLimit] = {
    MessageClass.TRANSACTION: RateLimit.per_minute(TRANSACTIONS_PER_MINUTE, TRANSACTION_BURST),
    MessageClass.STEM: RateLimit.per_minute(STEM_TRANSACTIONS_PER_MINUTE, STEM_BURST),
    MessageClass.INVENTORY: RateLimit.per_minute(INVENTORIES_PER_MINUTE, INVENTORY_BURST),
    MessageClass.GET_DATA: RateLimit.per_minute(GET_DATA_PER_MINUTE, GET_DATA_BURST),
    MessageClass.RESPONSE: RateLimit.per_minute(RESPONSES_PER_MINUTE, RESPONSE_BURST),
    MessageClass.BLOCK: RateLimit.per_minute(BLOCKS_PER_MINUTE, BLOCK_BURST),
    MessageClass.GET_BLOCK: RateLimit.per_minute(GET_BLOCKS_PER_MINUTE, GET_BLOCK_BURST),
    MessageClass.GET_HEADERS: RateLimit.per_minute(GET_HEADERS_PER_MINUTE, GET_HEADERS_BURST),
    MessageClass.HEADERS: RateLimit.per_minute(HEADERS_PER_MINUTE, HEADERS_BURST),
    MessageClass.GET_BLOCKS: RateLimit.per_minute(
        GET_BLOCKS_REQUESTS_PER_MINUTE, GET_BLOCKS_REQUEST_BURST
    ),
    MessageClass.SYNC_BLOCK: RateLimit.per_minute(SYNC_BLOCKS_PER_MINUTE, SYNC_BLOCK_BURST),
    MessageClass.ADDR_ENTRY: RateLimit(MAX_ADDR_RATE_PER_SECOND, MAX_ADDR_PROCESSING_TOKEN_BUCKET),
    MessageClass.GET_ADDR: RateLimit.per_minute(GET_ADDRS_PER_MINUTE, GET_ADDR_BURST),
    MessageClass.PING: RateLimit.per_minute(PINGS_PER_MINUTE, PING_BURST),
    MessageClass.CONSENSUS: RateLimit.per_minute(CONSENSUS_PER_MINUTE, CONSENSUS_BURST),
    MessageClass.OTHER: RateLimit.per_minute(OTHER_PER_MINUTE, OTHER_BURST),
}


def bandwidth_bucket(bytes_per_second: float, now: float) -> TokenBucket:
    """A bucket of bytes: a second's allowance, at least two maximum-size messages."""
    return TokenBucket(
        bytes_per_second, max(bytes_per_second, float(MIN_BANDWIDTH_BURST_BYTES)), now
    )


class PeerLimiter:
    """The receive limits of one connection: a bucket per message class, one of bytes.

    `dropped` counts what was refused per class (addresses for ADDR_ENTRY); the
    misbehaviour logic reads it to decide when a peer is flooding rather than unlucky.
    """

    __slots__ = ("_buckets", "_by_type", "_bytes", "_dropped", "_other", "dropped_bytes")

    def __init__(
        self,
        now: float,
        receive_bytes_per_second: float | None = DEFAULT_PEER_RECEIVE_BYTES_PER_SECOND,
        rate_limits: Mapping[MessageClass, RateLimit] = RATE_LIMITS,
    ) -> None:
        missing = set(MessageClass) - set(rate_limits)
        if missing:
            raise ValueError(f"no rate limit for {sorted(c.name for c in missing)}")
        self._buckets = {
            cls: TokenBucket(limit.rate, limit.burst, now) for cls, limit in rate_limits.items()
        }
        self._bytes = (
            None
            if receive_bytes_per_second is None
            else bandwidth_bucket(receive_bytes_per_second, now)
        )
        # The bucket of each message type, so the per-message check (`admit_message`)
        # hashes a type, not an enum member (whose hash is Python code). None: metered
        # elsewhere (Addr counts addresses, in the address exchange).
        self._by_type: dict[type, TokenBucket | None] = {
            message_type: None if cls is MessageClass.ADDR_ENTRY else self._buckets[cls]
            for message_type, cls in _CLASS_OF_TYPE.items()
        }
        self._other = self._buckets[MessageClass.OTHER]
        self._dropped = dict.fromkeys(MessageClass, 0)
        self.dropped_bytes = 0

    def admit(self, message_class: MessageClass, now: float, count: int = 1) -> bool:
        """Whether `count` units of this class may be processed now; all or nothing."""
        if self._buckets[message_class].take(now, count):
            return True
        self._dropped[message_class] += count
        return False

    def admit_message(self, message_type: type, now: float) -> MessageClass | None:
        """None if one message of this type may be processed now; else the refused class.

        `admit(message_class(message), now)` for one message, Addr always admitted (its
        addresses are metered one by one). Runs once per received message.
        """
        bucket = self._by_type.get(message_type, self._other)
        if bucket is None or bucket.take(now):
            return None
        refused = _CLASS_OF_TYPE.get(message_type, MessageClass.OTHER)
        self._dropped[refused] += 1
        return refused

    def admit_up_to(self, message_class: MessageClass, now: float, count: int) -> int:
        """How many of `count` units may be processed; the rest are dropped.

        Bitcoin processes an Addr message's addresses while its bucket lasts and skips
        the others, rather than refusing the whole message.
        """
        bucket = self._buckets[message_class]
        admitted = max(0, min(count, math.floor(bucket.level(now) + TOKEN_EPSILON)))
        if admitted:
            bucket.take(now, admitted)
        self._dropped[message_class] += count - admitted
        return admitted

    def admit_bytes(self, size: int, now: float) -> bool:
        """Whether a received message of `size` bytes fits the peer's bandwidth."""
        if self._bytes is None or self._bytes.take(now, size):
            return True
        self.dropped_bytes += size
        return False

    def expect_addresses(self, count: int = MAX_ADDR_PER_MESSAGE) -> None:
        """We just sent GetAddr: the answer's addresses are welcome beyond the rate."""
        self._buckets[MessageClass.ADDR_ENTRY].add(count)

    def level(self, message_class: MessageClass, now: float) -> float:
        return self._buckets[message_class].level(now)

    @property
    def dropped(self) -> dict[MessageClass, int]:
        """Refused units per class since the connection opened (a copy)."""
        return dict(self._dropped)


@dataclass(frozen=True, slots=True)
class BandwidthLimits:
    """Receive caps in bytes a second: per peer and for the whole node. None: no cap."""

    per_peer_bytes_per_second: float | None = DEFAULT_PEER_RECEIVE_BYTES_PER_SECOND
    global_bytes_per_second: float | None = DEFAULT_GLOBAL_RECEIVE_BYTES_PER_SECOND

    def __post_init__(self) -> None:
        for value in (self.per_peer_bytes_per_second, self.global_bytes_per_second):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"a bandwidth cap must be positive and finite, not {value}")

    def peer_limiter(self, now: float) -> PeerLimiter:
        return PeerLimiter(now, self.per_peer_bytes_per_second)


class GlobalBandwidth:
    """One bucket of received bytes shared by every connection of the node."""

    __slots__ = ("_bucket", "dropped_bytes")

    def __init__(self, limits: BandwidthLimits, now: float) -> None:
        rate = limits.global_bytes_per_second
        self._bucket = None if rate is None else bandwidth_bucket(rate, now)
        self.dropped_bytes = 0

    def admit_bytes(self, size: int, now: float) -> bool:
        if self._bucket is None or self._bucket.take(now, size):
            return True
        self.dropped_bytes += size
        return False

    def wait_time(self, size: int, now: float) -> float:
        """Seconds until `size` bytes fit: how long the runtime should pause reading."""
        return 0.0 if self._bucket is None else self._bucket.wait_time(now, size)


@dataclass(frozen=True, slots=True)
class SendQueueLimit:
    """How many bytes we queue for a peer before we stop serving it, then drop it.

    A peer that does not read makes us hold its data in memory; past `pause_bytes` we
    stop answering its requests (Bitcoin's fPauseSend), past `max_bytes` it cannot keep
    up and we disconnect.
    """

    max_bytes: int = MAX_SEND_QUEUE_BYTES
    pause_bytes: int = SEND_QUEUE_PAUSE_BYTES

    def __post_init__(self) -> None:
        if not 0 < self.pause_bytes <= self.max_bytes:
            raise ValueError("need 0 < pause_bytes <= max_bytes")

    def should_pause(self, queued_bytes: int) -> bool:
        """Stop processing the peer's requests until its queue drains."""
        return queued_bytes > self.pause_bytes

    def cannot_keep_up(self, queued_bytes: int) -> bool:
        """Disconnect: the peer reads too slowly for what it is sent."""
        return queued_bytes > self.max_bytes

"""Token buckets, the per-class rate table, bandwidth caps and the send-queue policy."""

from __future__ import annotations

import ast
import math
import random
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshchain.chainkit import ChainKit
from meshchain.core.chain.genesis import genesis_block
from meshchain.core.consensus.bftwire import Commit, DuplicateVote, SignedProposal, SignedVote
from meshchain.core.peers.address import net_address
from meshchain.core.peers.limits import (
    DEFAULT_PEER_RECEIVE_BYTES_PER_SECOND,
    MAX_ADDR_PROCESSING_TOKEN_BUCKET,
    MAX_ADDR_RATE_PER_SECOND,
    MAX_SEND_QUEUE_BYTES,
    RATE_LIMITS,
    BandwidthLimits,
    GlobalBandwidth,
    MessageClass,
    PeerLimiter,
    RateLimit,
    SendQueueLimit,
    TokenBucket,
    message_class,
    message_cost,
)
from meshchain.core.wire.codec import MAX_MESSAGE_SIZE, encode
from meshchain.core.wire.messages import (
    Addr,
    AddrEntry,
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
    Goodbye,
    Headers,
    Hello,
    Inventory,
    InvKind,
    NotFound,
    Ping,
    Pong,
    ProposalMessage,
    SendCompact,
    StemTransaction,
    SyncBlock,
    TransactionMessage,
    Transactions,
    VoteMessage,
)

T0 = 1_000.0
RUNTIME_NETWORK = Path(__file__).resolve().parents[2] / "src/meshchain/runtime/network.py"


# --- TokenBucket -------------------------------------------------------------------


def test_bucket_starts_full_and_empties() -> None:
    bucket = TokenBucket(rate=1.0, capacity=3.0, now=T0)
    assert [bucket.take(T0) for _ in range(4)] == [True, True, True, False]
    assert bucket.level(T0) == pytest.approx(0.0)


def test_bucket_refills_with_elapsed_time() -> None:
    bucket = TokenBucket(rate=2.0, capacity=10.0, now=T0, initial=0.0)
    assert not bucket.take(T0)
    assert bucket.level(T0 + 1.5) == pytest.approx(3.0)
    assert bucket.take(T0 + 1.5, 3.0)
    assert not bucket.take(T0 + 1.5, 0.5)


def test_bucket_refill_is_capped() -> None:
    bucket = TokenBucket(rate=5.0, capacity=10.0, now=T0, initial=0.0)
    assert bucket.level(T0 + 3_600) == 10.0
    assert not bucket.take(T0 + 3_600, 10.5)
    assert bucket.take(T0 + 3_600, 10.0)


def test_bucket_burst_then_sustained_rate() -> None:
    bucket = TokenBucket(rate=1.0, capacity=5.0, now=T0)
    admitted = sum(bucket.take(T0 + i * 0.1) for i in range(100))  # 10 s of 10 a second
    # The burst of 5, then about one a second for the ~10 s that pass.
    assert 14 <= admitted <= 15


def test_take_is_all_or_nothing() -> None:
    bucket = TokenBucket(rate=1.0, capacity=5.0, now=T0, initial=3.0)
    assert not bucket.take(T0, 4.0)
    assert bucket.level(T0) == pytest.approx(3.0)


def test_clock_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=1.0, capacity=100.0, now=T0, initial=0.0)
    assert bucket.level(T0 - 500) == 0.0
    assert not bucket.take(T0 - 500)
    # Back at the latest reading: the interval already seen is not counted again.
    assert bucket.level(T0) == 0.0
    assert bucket.level(T0 + 2) == pytest.approx(2.0)
    assert bucket.level(T0 + 1) == pytest.approx(2.0)  # a step back keeps what was earned


def test_add_bypasses_capacity_and_refill_does_not_cut_it() -> None:
    bucket = TokenBucket(rate=1.0, capacity=10.0, now=T0)
    bucket.add(1_000)
    assert bucket.level(T0 + 60) == pytest.approx(1_010.0)
    assert bucket.take(T0 + 60, 1_005)
    assert bucket.level(T0 + 60) == pytest.approx(5.0)
    assert bucket.level(T0 + 600) == 10.0


def test_wait_time() -> None:
    bucket = TokenBucket(rate=2.0, capacity=10.0, now=T0, initial=0.0)
    assert bucket.wait_time(T0, 4.0) == pytest.approx(2.0)
    assert bucket.wait_time(T0 + 2.0, 4.0) == 0.0
    assert bucket.wait_time(T0, 11.0) == math.inf


@pytest.mark.parametrize(
    ("rate", "capacity"), [(-1.0, 1.0), (1.0, 0.0), (math.nan, 1.0), (1.0, math.inf)]
)
def test_bucket_rejects_bad_parameters(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError, match="must be finite"):
        TokenBucket(rate, capacity, T0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-50, 50), st.floats(0, 20)),
        max_size=60,
    )
)
def test_bucket_level_stays_within_bounds(steps: list[tuple[float, float]]) -> None:
    bucket = TokenBucket(rate=0.7, capacity=12.0, now=T0)
    now, spent, latest = T0, 0.0, T0
    for delta, amount in steps:
        now += delta
        latest = max(latest, now)
        if bucket.take(now, amount):
            spent += amount
        assert 0.0 <= bucket.level(now) <= 12.0
    # Nothing is minted: what was spent is at most the start plus the refill over the
    # furthest time reached.
    assert spent <= 12.0 + 0.7 * (latest - T0) + 1e-6


# --- The addr bucket (Bitcoin's numbers) ---------------------------------------------


def test_addr_limits_are_bitcoins() -> None:
    assert RATE_LIMITS[MessageClass.ADDR_ENTRY] == RateLimit(0.1, 1_000)
    assert MAX_ADDR_RATE_PER_SECOND == 0.1
    assert MAX_ADDR_PROCESSING_TOKEN_BUCKET == 1_000


def test_addr_bucket_rejects_the_1001st_address_then_admits_one_per_10_s() -> None:
    limiter = PeerLimiter(T0)
    admitted = [limiter.admit(MessageClass.ADDR_ENTRY, T0) for _ in range(1_001)]
    assert admitted.count(True) == 1_000
    assert admitted[-1] is False
    assert not limiter.admit(MessageClass.ADDR_ENTRY, T0 + 9.9)
    assert limiter.admit(MessageClass.ADDR_ENTRY, T0 + 10.0)
    assert not limiter.admit(MessageClass.ADDR_ENTRY, T0 + 10.0)
    assert limiter.admit_up_to(MessageClass.ADDR_ENTRY, T0 + 30.0, 5) == 2
    assert limiter.dropped[MessageClass.ADDR_ENTRY] == 1 + 1 + 1 + 3


def test_admit_up_to_processes_addresses_while_the_bucket_lasts() -> None:
    limiter = PeerLimiter(T0)
    assert limiter.admit_up_to(MessageClass.ADDR_ENTRY, T0, 700) == 700
    assert limiter.admit_up_to(MessageClass.ADDR_ENTRY, T0, 700) == 300
    assert limiter.dropped[MessageClass.ADDR_ENTRY] == 400
    assert limiter.admit_up_to(MessageClass.ADDR_ENTRY, T0, 10) == 0


def test_sending_getaddr_makes_room_for_the_answer() -> None:
    limiter = PeerLimiter(T0)
    assert limiter.admit_up_to(MessageClass.ADDR_ENTRY, T0, 1_000) == 1_000
    limiter.expect_addresses()
    assert limiter.admit_up_to(MessageClass.ADDR_ENTRY, T0 + 1, 1_000) == 1_000
    assert not limiter.admit(MessageClass.ADDR_ENTRY, T0 + 1)


# --- Message classes -----------------------------------------------------------------


def real_messages() -> list[tuple[AnyMessage, MessageClass]]:
    kit = ChainKit(seed=3)
    block = genesis_block(kit.genesis)
    tx = kit.transfer(bytes(32), 0, 1, amount=5, fee=1, nonce=0)
    entry = AddrEntry(net_address("10.1.2.3", 9000), b"", 1, 1_700_000_000)
    hello = Hello(1, bytes(32), bytes(range(32)), "10.0.0.1:9000", 1, 0, bytes(32), "test/1")
    vote = SignedVote(1, 1, 0, b"", 0, bytes(64))
    return [
        (TransactionMessage(tx), MessageClass.TRANSACTION),
        (BlockMessage(block), MessageClass.BLOCK),
        (GetBlock(bytes(32)), MessageClass.GET_BLOCK),
        (Addr([entry, entry]), MessageClass.ADDR_ENTRY),
        (GetAddr(), MessageClass.GET_ADDR),
        (Ping(7), MessageClass.PING),
        (Pong(7), MessageClass.PING),
        (hello, MessageClass.OTHER),
        (Goodbye(0, "bye"), MessageClass.OTHER),
        (Inventory(InvKind.TRANSACTION, [bytes(32)]), MessageClass.INVENTORY),
        (GetData(InvKind.BLOCK, [bytes(32)]), MessageClass.GET_DATA),
        (GetBlockTxn(bytes(32), [0]), MessageClass.GET_DATA),
        (NotFound(InvKind.TRANSACTION, [bytes(32)]), MessageClass.RESPONSE),
        (Transactions([tx]), MessageClass.RESPONSE),
        (BlockTxn(bytes(32), [tx]), MessageClass.RESPONSE),
        (StemTransaction(tx), MessageClass.STEM),
        (CompactBlock(block.header, 1, [bytes(6)], []), MessageClass.BLOCK),
        (SendCompact(True), MessageClass.OTHER),
        (GetHeaders([bytes(32)], bytes(32)), MessageClass.GET_HEADERS),
        (Headers([block.header]), MessageClass.HEADERS),
        (GetBlocks([bytes(32)]), MessageClass.GET_BLOCKS),
        (SyncBlock(msgspec.Raw(encode(block))), MessageClass.SYNC_BLOCK),
        (BlocksNotFound([bytes(32)]), MessageClass.SYNC_BLOCK),
        (ProposalMessage(SignedProposal(1, 0, -1, block, bytes(64))), MessageClass.CONSENSUS),
        (VoteMessage(vote), MessageClass.CONSENSUS),
        (CommitMessage(block, Commit(1, 0, bytes(32), [])), MessageClass.CONSENSUS),
        (EvidenceMessage(DuplicateVote(vote, vote)), MessageClass.CONSENSUS),
        (ConsensusStatus(1, 0), MessageClass.CONSENSUS),
    ]


def test_every_message_maps_to_its_class() -> None:
    pairs = real_messages()
    assert [message_class(message) for message, _ in pairs] == [cls for _, cls in pairs]
    assert {cls for _, cls in pairs} == set(MessageClass)


def test_every_message_type_is_covered() -> None:
    # A new message type must be added to real_messages() and given a class on purpose.
    covered = {type(message) for message, _ in real_messages()}
    assert covered == set(AnyMessage.__args__)


def test_addr_costs_one_token_per_address() -> None:
    costs = {type(m).__name__: message_cost(m) for m, _ in real_messages()}
    assert costs["Addr"] == 2
    assert {name for name, cost in costs.items() if cost != 1} == {"Addr"}


# --- PeerLimiter -----------------------------------------------------------------------


def test_table_covers_every_class_with_positive_limits() -> None:
    assert set(RATE_LIMITS) == set(MessageClass)
    for limit in RATE_LIMITS.values():
        assert limit.rate > 0
        assert limit.burst >= 1


def test_dropped_counts_are_per_class() -> None:
    limiter = PeerLimiter(T0)
    burst = int(RATE_LIMITS[MessageClass.GET_ADDR].burst)
    for _ in range(burst + 3):
        limiter.admit(MessageClass.GET_ADDR, T0)
    dropped = limiter.dropped
    assert dropped[MessageClass.GET_ADDR] == 3
    assert sum(dropped.values()) == 3
    dropped[MessageClass.GET_ADDR] = 0  # a copy: the limiter's count is unchanged
    assert limiter.dropped[MessageClass.GET_ADDR] == 3


def test_limiter_needs_a_limit_for_every_class() -> None:
    partial = {MessageClass.TRANSACTION: RateLimit(1.0, 1.0)}
    with pytest.raises(ValueError, match="no rate limit"):
        PeerLimiter(T0, rate_limits=partial)


def test_honest_workload_never_hits_a_limit() -> None:
    """Every peer relays every transaction and block (flood relay): 50 tx/s network-wide,
    a block every 2 s, a ping every 30 s, for 30 minutes, with jittered arrivals."""
    rng = random.Random(7)
    limiter = PeerLimiter(T0)
    now = T0
    assert limiter.admit(MessageClass.OTHER, now)  # Hello
    assert limiter.admit(MessageClass.GET_ADDR, now)
    limiter.expect_addresses()  # we sent GetAddr too: its answer is welcome
    assert limiter.admit_up_to(MessageClass.ADDR_ENTRY, now, 1_000) == 1_000
    for tick in range(30 * 60 * 10):  # 0.1 s ticks
        now = T0 + tick * 0.1
        for _ in range(rng.choice((3, 5, 7))):
            assert limiter.admit(MessageClass.TRANSACTION, now)
            assert limiter.admit_bytes(250, now)
        if tick % 20 == 0:
            assert limiter.admit(MessageClass.BLOCK, now)
            assert limiter.admit_bytes(200_000, now)
        if tick % 300 == 0:
            assert limiter.admit(MessageClass.PING, now)
            assert limiter.admit(MessageClass.PING, now)  # and the Pong
            assert limiter.admit(MessageClass.ADDR_ENTRY, now)  # a re-announced address
    assert sum(limiter.dropped.values()) == 0
    assert limiter.dropped_bytes == 0


def test_a_transaction_flood_is_cut_to_the_rate() -> None:
    limiter = PeerLimiter(T0)
    admitted = sum(limiter.admit(MessageClass.TRANSACTION, T0 + i / 1_000) for i in range(20_000))
    limit = RATE_LIMITS[MessageClass.TRANSACTION]
    assert admitted <= limit.burst + limit.rate * 20 + 1
    assert limiter.dropped[MessageClass.TRANSACTION] == 20_000 - admitted


# --- Bandwidth -------------------------------------------------------------------------


def test_peer_bandwidth_admits_a_maximum_message_then_limits() -> None:
    limiter = PeerLimiter(T0, receive_bytes_per_second=1_000_000)
    assert limiter.admit_bytes(MAX_MESSAGE_SIZE, T0)
    assert limiter.admit_bytes(MAX_MESSAGE_SIZE, T0)
    assert not limiter.admit_bytes(MAX_MESSAGE_SIZE, T0)
    assert limiter.dropped_bytes == MAX_MESSAGE_SIZE
    assert limiter.admit_bytes(MAX_MESSAGE_SIZE, T0 + 4.0)


def test_default_peer_bandwidth_and_unlimited() -> None:
    default = PeerLimiter(T0)
    assert DEFAULT_PEER_RECEIVE_BYTES_PER_SECOND >= MAX_MESSAGE_SIZE
    sent = sum(default.admit_bytes(1_000_000, T0) for _ in range(20))
    assert sent == 8  # the burst: two maximum-size messages
    unlimited = PeerLimiter(T0, receive_bytes_per_second=None)
    assert all(unlimited.admit_bytes(MAX_MESSAGE_SIZE, T0) for _ in range(100))


def test_global_bandwidth_is_shared_and_optional() -> None:
    assert BandwidthLimits().global_bytes_per_second is None
    unlimited = GlobalBandwidth(BandwidthLimits(), T0)
    assert all(unlimited.admit_bytes(MAX_MESSAGE_SIZE, T0) for _ in range(50))
    assert unlimited.wait_time(MAX_MESSAGE_SIZE, T0) == 0.0

    capped = GlobalBandwidth(BandwidthLimits(global_bytes_per_second=10_000_000), T0)
    assert capped.admit_bytes(6_000_000, T0)
    assert not capped.admit_bytes(6_000_000, T0)
    assert capped.dropped_bytes == 6_000_000
    assert capped.wait_time(6_000_000, T0) == pytest.approx(0.2)
    assert capped.admit_bytes(6_000_000, T0 + 0.2)


def test_bandwidth_limits_make_peer_limiters() -> None:
    limits = BandwidthLimits(per_peer_bytes_per_second=None)
    limiter = limits.peer_limiter(T0)
    assert all(limiter.admit_bytes(MAX_MESSAGE_SIZE, T0) for _ in range(10))


@pytest.mark.parametrize("value", [0.0, -5.0, math.inf])
def test_bandwidth_limits_reject_nonsense(value: float) -> None:
    with pytest.raises(ValueError, match="positive and finite"):
        BandwidthLimits(global_bytes_per_second=value)


# --- Send queue ------------------------------------------------------------------------


def runtime_constant(name: str) -> object:
    """A constant of runtime/network.py, read from its source (importing it pulls in the
    whole runtime)."""
    tree = ast.parse(RUNTIME_NETWORK.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            expression = compile(ast.Expression(node.value), str(RUNTIME_NETWORK), "eval")
            return eval(expression, {"__builtins__": {}})
    raise LookupError(name)


def test_send_queue_limit_matches_the_runtime() -> None:
    assert runtime_constant("MAX_SEND_BUFFER") == MAX_SEND_QUEUE_BYTES
    assert MAX_SEND_QUEUE_BYTES >= 2 * MAX_MESSAGE_SIZE


def test_send_queue_pauses_then_disconnects() -> None:
    policy = SendQueueLimit()
    assert not policy.should_pause(policy.pause_bytes)
    assert policy.should_pause(policy.pause_bytes + 1)
    assert not policy.cannot_keep_up(MAX_SEND_QUEUE_BYTES)
    assert policy.cannot_keep_up(MAX_SEND_QUEUE_BYTES + 1)
    with pytest.raises(ValueError, match="pause_bytes"):
        SendQueueLimit(max_bytes=100, pause_bytes=200)

"""Sync's parts on their own: block locators, the header tree, the download scheduler's
stall timeout and window, and the reorder buffer."""

from __future__ import annotations

import itertools

import msgspec
from relaykit import KIT
from synckit import WeightEngine, engine_chain, kit_chain, now_after, weighted_headers

from meshchain.core.chain.block import Block, block_hash, header_hash
from meshchain.core.chain.chainstate import ChainState
from meshchain.core.store import MemoryStore
from meshchain.core.sync.download import (
    BLOCK_DOWNLOAD_TIMEOUT_BASE,
    BLOCK_STALLING_TIMEOUT_DEFAULT,
    BLOCK_STALLING_TIMEOUT_MAX,
    MAX_BLOCKS_IN_TRANSIT_PER_PEER,
    BlockDownload,
    ReorderBuffer,
)
from meshchain.core.sync.headers import HeaderTree
from meshchain.core.sync.locator import (
    block_locator,
    fork_height,
    headers_after,
    locator_heights,
)
from meshchain.core.wire.messages import MAX_HEADERS_RESULTS, MAX_LOCATOR_SIZE
from meshchain.errors import RejectCode

# --- locators -----------------------------------------------------------------------------


def test_a_locator_is_dense_near_the_tip_then_doubles_down_to_genesis() -> None:
    assert locator_heights(0) == [0]
    assert locator_heights(3) == [3, 2, 1, 0]
    heights = locator_heights(1_000)
    assert heights[:10] == list(range(1_000, 990, -1))
    gaps = [a - b for a, b in itertools.pairwise(heights[9:-1])]  # the tenth on
    assert gaps == [2**i for i in range(1, len(gaps) + 1)]
    assert heights[-1] == 0
    assert len(locator_heights(2**63 - 1)) <= MAX_LOCATOR_SIZE


def extend(chain: ChainState, count: int, gap_ms: int) -> list[Block]:
    blocks = []
    for _ in range(count):
        block, _ = chain.build_block([], chain.tip_header.timestamp_ms + gap_ms, bytes(20))
        chain.add_block(block, block.header.timestamp_ms / 1000 + 1)
        blocks.append(block)
    return blocks


def test_the_answering_side_finds_the_fork_from_a_locator() -> None:
    engine = WeightEngine()
    ours, shared = engine_chain(engine, 20)
    theirs = ChainState(KIT.genesis, engine, MemoryStore())
    for block in shared:
        theirs.add_block(block, block.header.timestamp_ms / 1000 + 1)
    extend(ours, 30, gap_ms=1_000)  # ours: 50 blocks
    branch = extend(theirs, 10, gap_ms=3_000)  # theirs: 30, parting after height 20
    locator = block_locator(ours.height, lambda h: ours.hash_at(h) or b"")
    assert len(locator) == len(locator_heights(50))
    assert fork_height(ours, locator) == 50
    # The locator names 50..41, 39, 35, 27, 11, 0: the first they share is 11, so the
    # answer starts a few blocks below the real fork (20), as Bitcoin's does.
    assert fork_height(theirs, locator) == 11
    headers = headers_after(theirs, locator, bytes(32))
    assert headers == [block.header for block in [*shared[11:], *branch]]
    stop = block_hash(shared[14])
    assert headers_after(theirs, locator, stop) == [block.header for block in shared[11:15]]
    assert fork_height(theirs, [bytes(32)]) == 0  # nothing known: from genesis


def test_headers_after_sends_at_most_a_full_batch() -> None:
    engine = WeightEngine()
    chain, _ = engine_chain(engine, MAX_HEADERS_RESULTS + 5)
    headers = headers_after(chain, [chain.hash_at(0) or b""], bytes(32))
    assert len(headers) == MAX_HEADERS_RESULTS
    assert headers[0].height == 1


# --- the header tree ----------------------------------------------------------------------


def test_the_tree_follows_the_most_work_branch_and_empties_as_blocks_are_stored() -> None:
    blocks = kit_chain(20)
    chain = KIT.chain()
    tree = HeaderTree(chain)
    now = now_after(blocks)
    result = tree.add([b.header for b in blocks], now, "p")
    assert result.added == 20
    assert result.error is None
    assert tree.path_low == 1
    assert tree.path_high == 20
    assert tree.best is not None
    assert tree.best.hash == block_hash(blocks[-1])
    assert tree.locator(block_hash(blocks[-1]))[:2] == [block_hash(b) for b in blocks[:-3:-1]]
    again = tree.add([b.header for b in blocks[5:10]], now, "q")
    assert again.added == 0
    assert again.last == block_hash(blocks[9])
    for block in blocks[:5]:
        chain.add_block(block, now)
        tree.stored(block_hash(block))
    assert len(tree) == 15
    assert tree.path_low == 6


def test_a_heavier_branch_becomes_the_path() -> None:
    light = WeightEngine(weight=1)
    chain, _ = engine_chain(light, 0)
    _, main = engine_chain(light, 6)
    tree = HeaderTree(chain)
    now = main[-1].header.timestamp_ms / 1000 + 1
    tree.add([b.header for b in main], now, "p")
    rebuilds = tree.rebuilds
    # Two blocks of weight 10 on top of height 2 outweigh the main branch's 4 of 1.
    fork = weighted_headers(main[1].header, 2, weight=10, gap_ms=500)
    assert tree.add(fork, now, "q").added == 2
    assert tree.best is not None
    assert tree.best.hash == header_hash(fork[-1])
    assert tree.rebuilds > rebuilds
    assert tree.path[3] == header_hash(fork[0])
    assert tree.path[2] == block_hash(main[1])
    assert tree.prune(lambda entry: entry.source != "q") == 2  # its branch only
    assert tree.best is not None
    assert tree.best.hash == block_hash(main[-1])


def test_the_tree_refuses_what_exceeds_its_capacity_and_bad_timestamps() -> None:
    blocks = kit_chain(20)
    now = now_after(blocks)
    tree = HeaderTree(KIT.chain(), capacity=8)
    result = tree.add([b.header for b in blocks], now, "p")
    assert result.full
    assert result.added == 8
    assert len(tree) == 8
    longer = kit_chain(40)
    early = HeaderTree(KIT.chain())
    clock = longer[4].header.timestamp_ms / 1000  # block 5's time: 15 s of drift allowed
    too_soon = early.add([b.header for b in longer], clock, "p")
    assert too_soon.error is not None
    assert too_soon.error.code is RejectCode.BAD_TIMESTAMP
    assert too_soon.added == 20  # up to the first one too far ahead of that clock


# --- the download scheduler ---------------------------------------------------------------


def plan(count: int) -> dict[int, bytes]:
    return {height: height.to_bytes(32, "big") for height in range(1, count + 1)}


def test_a_peer_gets_at_most_sixteen_blocks_in_order_and_only_what_it_has() -> None:
    path = plan(100)
    download = BlockDownload()
    first = download.assign("a", 0.0, 1, 100, path.get, download.in_flight)
    assert first == [path[h] for h in range(1, 17)]
    assert download.assign("a", 0.0, 1, 100, path.get, download.in_flight) == []
    short = download.assign("b", 0.0, 1, 20, path.get, download.in_flight)
    assert short == [path[h] for h in range(17, 21)]  # it has nothing past 20
    assert download.received("a", path[1], 1.0)
    assert download.assign("a", 1.0, 2, 100, path.get, download.in_flight) == [path[21]]
    assert download.release("b") == list(range(17, 21))
    again = download.assign("c", 1.0, 2, 100, path.get, download.in_flight)
    assert again[:4] == [path[h] for h in range(17, 21)]  # handed back first
    assert len(again) == MAX_BLOCKS_IN_TRANSIT_PER_PEER


def test_the_stall_timeout_doubles_per_stall_up_to_a_cap_and_eases_back() -> None:
    path = plan(2_000)
    download = BlockDownload()
    timeouts = []
    now = 0.0
    for round_ in range(8):
        peer = f"slow{round_}"
        (first, *_) = download.assign(peer, now, 1, 2_000, path.get, download.in_flight)
        download.note_stall(first, "fast", now)
        timeout = download.stall_timeout
        assert download.overdue(now + timeout - 0.01) == []
        found = download.overdue(now + timeout + 0.01)
        assert [peer for peer, _ in found] == [peer]
        download.release(peer)
        timeouts.append(timeout)
        now += 100
    assert timeouts == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 64.0, 64.0]
    assert download.stall_timeout == BLOCK_STALLING_TIMEOUT_MAX
    eased = 0
    while download.stall_timeout > BLOCK_STALLING_TIMEOUT_DEFAULT:
        download.block_connected()
        eased += 1
    assert download.stall_timeout == BLOCK_STALLING_TIMEOUT_DEFAULT
    assert 15 <= eased <= 25  # 0.85 per block: 64 s back to 2 s in about twenty blocks


def test_a_delivery_clears_the_stall_and_a_silent_peer_times_out() -> None:
    path = plan(100)
    download = BlockDownload()
    (first, *_) = download.assign("a", 0.0, 1, 100, path.get, download.in_flight)
    download.note_stall(first, "b", 0.0)
    download.received("a", path[2], 1.0)  # anything from it: not stalling
    assert download.overdue(10.0) == []
    assert download.overdue(BLOCK_DOWNLOAD_TIMEOUT_BASE + 2.0)[0][0] == "a"


def test_the_reorder_buffer_counts_bytes() -> None:
    blocks = kit_chain(3)
    buffer = ReorderBuffer(max_bytes=1)
    raw = msgspec.msgpack.encode(blocks[2])
    buffer.put(block_hash(blocks[2]), blocks[2], raw, "p")
    buffer.put(block_hash(blocks[2]), blocks[2], raw, "p")  # once only
    assert len(buffer) == 1
    assert buffer.bytes == len(raw)
    assert buffer.over_budget()
    assert buffer.lowest_height() == 3
    held = buffer.pop(block_hash(blocks[2]))
    assert held is not None
    assert held[0] == blocks[2]
    assert buffer.bytes == 0
    assert not buffer.over_budget()

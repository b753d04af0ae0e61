"""Headers-first sync through `Node.handle`: a syncing node and the nodes it syncs from,
driven by hand (`synckit.pump` carries the sync messages between them)."""

from __future__ import annotations

import msgspec
import pytest
from synckit import (
    CLIENT,
    WeightEngine,
    connect,
    engine_chain,
    fire,
    hashes,
    kit_chain,
    node,
    now_after,
    pump,
    receive,
    requested,
    server,
    sync_sends,
    timer_due,
    weighted_headers,
)

from meshchain.core.chain.block import BLOCK_CODEC, Block, block_hash
from meshchain.core.events import (
    Action,
    BlockAccepted,
    Disconnect,
    PeerPunished,
    Send,
    SyncFinished,
    SyncProgress,
)
from meshchain.core.store import MemoryStore
from meshchain.core.sync import sync as sync_module
from meshchain.core.sync.download import (
    BLOCK_STALLING_TIMEOUT_DEFAULT,
    MAX_BLOCKS_IN_TRANSIT_PER_PEER,
)
from meshchain.core.sync.headers import MAX_HEADERS_IN_MEMORY
from meshchain.core.sync.sync import MAX_LOW_WORK_HEADERS, MAX_UNCONNECTING_HEADERS
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import (
    MAX_HEADERS_RESULTS,
    BlocksNotFound,
    GetBlocks,
    GetHeaders,
    Headers,
    SyncBlock,
)

PEERS = ("a", "b", "c", "d")


def punished(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.peer, a.offence) for a in actions if isinstance(a, PeerPunished)]


def disconnected(actions: list[Action]) -> list[str]:
    return [a.peer for a in actions if isinstance(a, Disconnect)]


def test_a_fresh_node_fetches_headers_from_one_peer_and_bodies_from_all() -> None:
    blocks = kit_chain(120, txs_every=3)
    now = now_after(blocks)
    servers = {peer: server(blocks) for peer in PEERS}
    client = node()
    first = connect(client, "a", len(blocks), now)
    (ask,) = sync_sends(first)
    assert ask.peer == "a"
    assert isinstance(ask.message, GetHeaders)
    later = [a for peer in PEERS[1:] for a in connect(client, peer, len(blocks), now)]
    assert sync_sends(later) == []  # one peer walks the headers; the others wait
    produced = pump(client, servers, first + later, now)
    assert client.chain.tip_hash == block_hash(blocks[-1])
    # The other peers were each probed for one header, not sent the whole chain again.
    probes = [a for a in sync_sends(produced) if isinstance(a.message, GetHeaders)]
    assert sorted(a.peer for a in probes) == sorted(PEERS)
    stops = {a.message.stop for a in probes if a.peer != "a" and isinstance(a.message, GetHeaders)}
    assert stops == {block_hash(blocks[-1])}
    asked = requested(produced)
    assert sorted(wanted for _, wanted in asked) == sorted(hashes(blocks))  # once each
    per_peer = {peer: sum(1 for p, _ in asked if p == peer) for peer in PEERS}
    assert all(count >= 16 for count in per_peer.values()), per_peer  # all four served
    batches = [a.message for a in sync_sends(produced) if isinstance(a.message, GetBlocks)]
    assert max(len(m.hashes) for m in batches) == MAX_BLOCKS_IN_TRANSIT_PER_PEER
    accepted = [a for a in produced if isinstance(a, BlockAccepted)]
    assert [a.height for a in accepted] == list(range(1, 121))  # in order
    assert client.chain.orphan_count == 0
    (finished,) = [a for a in produced if isinstance(a, SyncFinished)]
    assert finished.height == 120
    assert finished.blocks == 120
    assert len(client.sync.tree) == 0


def test_progress_is_reported_at_most_once_a_second() -> None:
    blocks = kit_chain(120, txs_every=3)
    start = now_after(blocks)
    servers = {"a": server(blocks)}
    client = node()

    def hold_bodies(peer: str, message: object) -> bool:
        return isinstance(message, GetBlocks)

    produced = pump(client, servers, connect(client, "a", 120, start), start, hold_bodies)
    asks = [a for a in sync_sends(produced) if isinstance(a.message, GetBlocks)]
    progress: list[SyncProgress] = []
    finished: list[SyncFinished] = []
    clock = start
    while asks:  # one GetBlocks answered every quarter of a second
        clock += 0.25
        ask = asks[0]

        def others(peer: str, message: object, ask: Send = ask) -> bool:
            return isinstance(message, GetBlocks) and message is not ask.message

        answered = pump(client, servers, [ask], clock, others)
        progress += [a for a in answered if isinstance(a, SyncProgress)]
        finished += [a for a in answered if isinstance(a, SyncFinished)]
        asks = asks[1:] + [a for a in sync_sends(answered[1:]) if isinstance(a.message, GetBlocks)]
    assert client.chain.height == 120
    assert len(progress) >= 2
    assert len(progress) <= (clock - start) + 1  # at most one a second
    assert all(p.target_height == 120 for p in progress)
    assert [p.height for p in progress] == sorted(p.height for p in progress)
    # After the first 16, each request names the 4 blocks that freed slots ask for.
    assert progress[-1].blocks_per_second == pytest.approx(16, rel=0.3)
    assert progress[-1].eta_seconds is not None
    assert [(f.height, f.blocks) for f in finished] == [(120, 120)]


def test_bodies_arriving_out_of_order_wait_in_the_buffer_not_the_orphan_pool() -> None:
    blocks = kit_chain(40)
    now = now_after(blocks)
    servers = {"a": server(blocks)}
    client = node()
    held: list[bytes] = []
    hold = client.sync.buffer.put

    def spy(block_hash_: bytes, block: Block, raw: bytes, peer: str) -> None:
        held.append(block_hash_)
        hold(block_hash_, block, raw, peer)

    client.sync.buffer.put = spy  # type: ignore[method-assign,assignment]

    def backwards(peer: str, answers: list[Send]) -> list[Send]:
        return list(reversed(answers))

    pump(client, servers, connect(client, "a", 40, now), now, rewrite=backwards)
    assert client.chain.tip_hash == block_hash(blocks[-1])
    assert held[:15] == hashes(blocks[15:0:-1])  # the first batch of 16, newest first
    assert client.chain.orphan_count == 0
    assert len(client.sync.buffer) == 0
    assert client.sync.buffer.bytes == 0


def test_a_stalling_peer_is_dropped_and_its_blocks_go_to_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sync_module, "BLOCK_DOWNLOAD_WINDOW", 32)
    blocks = kit_chain(80)
    now = now_after(blocks)
    servers = {"fast": server(blocks), "slow": server(blocks)}
    client = node()
    actions = connect(client, "fast", 80, now) + connect(client, "slow", 80, now)
    withheld: list[bytes] = []

    def slow_never_answers(peer: str, message: object) -> bool:
        if peer == "slow" and isinstance(message, GetBlocks):
            withheld.extend(message.hashes)
            return True
        return False

    produced = pump(client, servers, actions, now, drop=slow_never_answers)
    assert withheld, "the slow peer was given work"
    assert client.chain.height < 80  # the window cannot move past the slow peer's blocks
    assert client.sync.download.stall_timeout == BLOCK_STALLING_TIMEOUT_DEFAULT
    assert timer_due(produced) is not None
    early = fire(client, now + BLOCK_STALLING_TIMEOUT_DEFAULT - 0.5)
    assert disconnected(early) == []  # within the stall timeout
    late = fire(client, now + BLOCK_STALLING_TIMEOUT_DEFAULT + 0.5)
    assert disconnected(late) == ["slow"]
    assert punished(late) == [("slow", "stalling")]
    assert client.sync.download.stall_timeout == 2 * BLOCK_STALLING_TIMEOUT_DEFAULT
    again = [(p, h) for p, h in requested(late) if h in withheld]
    assert again
    assert {p for p, _ in again} == {"fast"}
    rest = pump(client, servers, late, now + 3, drop=slow_never_answers)
    assert client.chain.tip_hash == block_hash(blocks[-1])
    # Each connected block eased the raised timeout back toward the default.
    assert client.sync.download.stall_timeout == BLOCK_STALLING_TIMEOUT_DEFAULT
    assert [a for a in rest if isinstance(a, SyncFinished)]


def test_blocks_a_peer_does_not_have_are_asked_of_another() -> None:
    blocks = kit_chain(40)
    now = now_after(blocks)
    servers = {"a": server(blocks), "short": server(blocks[:10]), "lost": server(blocks)}
    client = node()
    # "short" claims the whole chain but holds 10 blocks: its probe shows where it ends.
    # "lost" shows every header but answers BlocksNotFound (it pruned the bodies).
    actions = [a for p in servers for a in connect(client, p, 40, now)]
    not_found: list[bytes] = []

    def prune(peer: str, answers: list[Send]) -> list[Send]:
        bodies = [a.message for a in answers if isinstance(a.message, SyncBlock)]
        if peer != "lost" or not bodies:
            return answers
        gone = [block_hash(BLOCK_CODEC.decode(bytes(body.block))) for body in bodies]
        not_found.extend(gone)
        return [Send(CLIENT, BlocksNotFound(gone))]

    produced = pump(client, servers, actions, now, rewrite=prune)
    assert client.chain.tip_hash == block_hash(blocks[-1])
    asked = requested(produced)
    assert {h for p, h in asked if p == "short"} <= set(hashes(blocks[:10]))
    assert not_found
    assert all(("a", h) in asked or ("short", h) in asked for h in not_found)
    assert disconnected(produced) == []


def test_a_body_that_does_not_match_its_header_is_punished_and_fetched_elsewhere() -> None:
    blocks = kit_chain(20, txs_every=2)
    now = now_after(blocks)
    servers = {"a": server(blocks), "liar": server(blocks)}
    client = node()
    actions = connect(client, "a", 20, now) + connect(client, "liar", 20, now)

    def tamper(peer: str, answers: list[Send]) -> list[Send]:
        out: list[Send] = []
        for answer in answers:
            message = answer.message
            if peer == "liar" and isinstance(message, SyncBlock):
                block = BLOCK_CODEC.decode(bytes(message.block))
                if block.transactions:  # drop its transaction: the header no longer fits
                    emptied = Block(block.header, [])
                    message = SyncBlock(msgspec.Raw(encode(emptied)))
            out.append(Send(answer.peer, message))
        return out

    produced = pump(client, servers, actions, now, rewrite=tamper)
    assert client.chain.tip_hash == block_hash(blocks[-1])
    assert ("liar", "invalid_block") in punished(produced)
    assert "a" not in disconnected(produced)


def test_a_restarted_node_resumes_from_its_stored_tip() -> None:
    blocks = kit_chain(60)
    now = now_after(blocks)
    servers = {"a": server(blocks)}
    store = MemoryStore()
    first = node(store)
    delivered = 0

    def stop_half_way(peer: str, message: object) -> bool:
        nonlocal delivered
        if isinstance(message, GetBlocks):
            if delivered >= 28:
                return True  # the process "dies" with these requests unanswered
            delivered += len(message.hashes)
        return False

    pump(first, servers, connect(first, "a", 60, now), now, drop=stop_half_way)
    stored = first.chain.height
    assert stored == delivered
    assert 28 <= stored < 60
    again = node(store, seed=2)  # a new process on the same store
    assert again.chain.height == stored
    produced = pump(again, servers, connect(again, "a", 60, now), now)
    assert again.chain.tip_hash == block_hash(blocks[-1])
    (ask, *_) = [a.message for a in sync_sends(produced) if isinstance(a.message, GetHeaders)]
    assert ask.locator[0] == block_hash(blocks[stored - 1])  # from the stored tip
    fetched = [h for _, h in requested(produced)]
    assert sorted(fetched) == sorted(hashes(blocks[stored:]))  # only what was missing


def test_invalid_headers_cost_the_sender() -> None:
    blocks = kit_chain(12)
    now = now_after(blocks)
    headers = [block.header for block in blocks]
    forged = msgspec.structs.replace(headers[5], consensus=bytes(64))
    client = node()
    connect(client, "forger", 12, now)
    actions = receive(client, "forger", Headers([*headers[:5], forged]), now)
    assert punished(actions) == [("forger", "invalid_consensus_proof")]
    assert disconnected(actions) == ["forger"]
    assert len(client.sync.tree) == 5  # the valid prefix is kept
    connect(client, "jumbled", 12, now)
    jumbled = receive(client, "jumbled", Headers([headers[0], headers[2]]), now)
    assert punished(jumbled) == [("jumbled", "invalid_block")]


def test_unconnecting_headers_are_asked_again_then_charged() -> None:
    blocks = kit_chain(12)
    now = now_after(blocks)
    client = node()
    connect(client, "p", 12, now)
    stray = Headers([blocks[7].header, blocks[8].header])
    for _ in range(MAX_UNCONNECTING_HEADERS):
        actions = receive(client, "p", stray, now)
        assert [type(s.message) for s in sync_sends(actions)] == [GetHeaders]
        assert punished(actions) == []
    last = receive(client, "p", stray, now)
    assert punished(last) == [("p", "protocol_violation")]


def test_headers_nobody_asked_for_are_ignored() -> None:
    blocks = kit_chain(12)
    client = node()
    connect(client, "p", 0, now_after(blocks))  # not ahead: not asked
    assert receive(client, "p", Headers([b.header for b in blocks]), now_after(blocks)) == []
    assert len(client.sync.tree) == 0


def test_an_endless_low_work_header_chain_is_cut_off_in_bounded_memory() -> None:
    heavy = WeightEngine(weight=10**9)
    _chain, blocks = engine_chain(heavy, 3)
    client = node(engine=heavy)
    now = blocks[-1].header.timestamp_ms / 1000 + 1
    for block in blocks:
        client.chain.add_block(block, now)
    genesis = client.chain.header(client.chain.hash_at(0) or b"")
    assert genesis is not None
    cheap = weighted_headers(genesis, 6 * MAX_HEADERS_RESULTS, weight=1, gap_ms=1)
    (ask,) = sync_sends(connect(client, "attacker", 10**9, now))
    assert isinstance(ask.message, GetHeaders)
    sizes: list[int] = []
    answered: list[Action] = []
    for offset in range(0, len(cheap), MAX_HEADERS_RESULTS):
        batch = Headers(cheap[offset : offset + MAX_HEADERS_RESULTS])
        answered = receive(client, "attacker", batch, now)
        sizes.append(len(client.sync.tree))
        assert len(client.sync.tree) <= MAX_HEADERS_IN_MEMORY
        if disconnected(answered):
            break
        (more,) = sync_sends(answered)  # a full batch: it is asked for the next one
        assert isinstance(more.message, GetHeaders)
    assert punished(answered) == [("attacker", "low_work_headers")]
    assert max(sizes[:-1]) <= MAX_LOW_WORK_HEADERS
    assert len(client.sync.tree) == 0  # its branch is forgotten
    assert client.chain.height == 3
    late = receive(client, "attacker", Headers(cheap[:10]), now)
    assert late == []
    assert len(client.sync.tree) == 0


def test_a_certified_by_child_chain_leaves_its_newest_block_to_consensus() -> None:
    bft = WeightEngine(certified_by_child=True)
    _chain, blocks = engine_chain(bft, 10)
    now = blocks[-1].header.timestamp_ms / 1000 + 1
    servers = {"a": server(blocks, engine=bft), "b": server(blocks, engine=bft)}
    client = node(engine=bft)
    actions = connect(client, "a", 10, now) + connect(client, "b", 10, now)
    produced = pump(client, servers, actions, now)
    fetched = {h for _, h in requested(produced)}
    assert block_hash(blocks[-1]) not in fetched  # no header proves it yet
    assert fetched == set(hashes(blocks[:-1]))
    assert client.chain.tip_hash == block_hash(blocks[-2])
    (finished,) = [a for a in produced if isinstance(a, SyncFinished)]
    assert finished.height == 9
    # A header whose parent certificate is wrong is refused and charged.
    bad = msgspec.structs.replace(blocks[-1].header, consensus=bytes(16))
    fresh = node(engine=bft)
    connect(fresh, "liar", 10, now)
    headers = [b.header for b in blocks[:-1]] + [bad]
    assert punished(receive(fresh, "liar", Headers(headers), now)) == [
        ("liar", "invalid_consensus_proof")
    ]


def test_getheaders_and_getblocks_are_served_from_the_chain() -> None:
    blocks = kit_chain(30)
    serving = server(blocks[:25])
    now = now_after(blocks)
    locator = [block_hash(blocks[9]), block_hash(blocks[0])]
    (answer,) = sync_sends(receive(serving, CLIENT, GetHeaders(locator, bytes(32)), now))
    assert isinstance(answer.message, Headers)
    assert answer.message.headers == [b.header for b in blocks[10:25]]
    stop = block_hash(blocks[14])
    (stopped,) = sync_sends(receive(serving, CLIENT, GetHeaders(locator, stop), now))
    assert isinstance(stopped.message, Headers)
    assert stopped.message.headers[-1] == blocks[14].header
    wanted = [block_hash(blocks[3]), block_hash(blocks[27])]
    replies = sync_sends(receive(serving, CLIENT, GetBlocks(wanted), now))
    assert [type(r.message) for r in replies] == [SyncBlock, BlocksNotFound]
    first, missing = replies[0].message, replies[1].message
    assert isinstance(first, SyncBlock)
    assert isinstance(missing, BlocksNotFound)
    assert BLOCK_CODEC.decode(bytes(first.block)) == blocks[3]
    assert missing.hashes == [block_hash(blocks[27])]


def test_a_peer_that_repeats_a_full_batch_is_not_asked_again() -> None:
    engine = WeightEngine()
    client = node(engine=engine)
    genesis = client.chain.tip_header
    headers = weighted_headers(genesis, MAX_HEADERS_RESULTS, weight=1, gap_ms=1)
    now = headers[-1].timestamp_ms / 1000
    connect(client, "p", 10**6, now)
    first = receive(client, "p", Headers(headers), now)
    asks = [s for s in sync_sends(first) if isinstance(s.message, GetHeaders)]
    assert [s.peer for s in asks] == ["p"]  # a full batch: the next one is asked for
    again = receive(client, "p", Headers(headers), now)
    assert [s for s in sync_sends(again) if isinstance(s.message, GetHeaders)] == []
    assert len(client.sync.tree) == MAX_HEADERS_RESULTS


def test_peers_are_probed_again_as_the_header_walk_goes_on() -> None:
    engine = WeightEngine()
    _, blocks = engine_chain(engine, MAX_HEADERS_RESULTS + 100)
    now = blocks[-1].header.timestamp_ms / 1000 + 1
    servers = {"a": server(blocks, engine=engine), "b": server(blocks, engine=engine)}
    client = node(engine=engine)
    actions = connect(client, "a", len(blocks), now) + connect(client, "b", len(blocks), now)
    produced = pump(client, servers, actions, now)
    assert client.chain.tip_hash == block_hash(blocks[-1])
    probes = [
        s.message.stop
        for s in sync_sends(produced)
        if s.peer == "b" and isinstance(s.message, GetHeaders)
    ]
    # Probed at the end of each of a's two batches, so b serves the second one too.
    assert probes == [block_hash(blocks[MAX_HEADERS_RESULTS - 1]), block_hash(blocks[-1])]
    late = {h for p, h in requested(produced) if p == "b"}
    assert late & set(hashes(blocks[MAX_HEADERS_RESULTS:]))

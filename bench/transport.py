"""Plain asyncio TCP against the meshchain secure session: bulk, round trips, handshakes.

Both sides of the comparison run the real `runtime/network.py` `PeerConnection` (one
preallocated receive buffer, the bytes fed to the session, its events handled, its timer
re-armed, one coalesced `transport.writelines(session.chunks_to_send())` per loop tick)
under a stand-in for `P2PService` that hands messages to the bench instead of a node. Only the
session differs: (a) `PlainSession` (bench/_transport_plain.py) puts the same records,
`[4-byte length][msgpack message]`, straight on TCP and decodes each with
`MESSAGE_CODEC`; (b) the real `SecureSession` (Noise XX, identity proof, hello,
ChaCha20-Poly1305 with 2-byte framing). So the ratios isolate the secure transport.

Bulk: real ~64 KiB `BlockMessage`s (signed ChainKit transactions), 128 in flight, the
receiver acknowledging every 16th; MB/s counts encoded messages (1 MB = 10**6 bytes).
Round trips: one 200-byte `TransactionMessage` at a time, echoed. Both run with the
receiver on the same event loop ("1 process": one thread, one core, does both ends) and
in a subprocess ("2 processes": the OS puts them on two cores). Handshakes: full
meshchain handshakes (until `SessionEstablished` on both sides, then hung up) over TCP on
127.0.0.1, 32 at a time, client and server on one event loop, so one core does both
sides' crypto; also in memory (two sessions wired together, no sockets). uvloop is used
when installed, in both processes; the two processes are pinned to two different CPUs.

Rounds are paired: in each, the plain and the secure connection are open at once and
their runs follow each other, plain first in even rounds, secure first in odd ones, so
the two sides of a ratio share whatever else the machine was doing. The table shows the
best of the rounds for each side and the median of the rounds' secure/plain ratios; the
verdicts rest on that median. Bulk runs also record CPU time per block, of the sender and
of the receiver: on a shared machine, waiting for a core inflates wall time far more
than CPU time.

    python bench/transport.py [--quick] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import cast

from _service import BenchService
from _transport_plain import PlainSession
from meshchain.chainkit import ChainKit
from meshchain.core.chain.tx import VerifiedTx, verify_transaction
from meshchain.core.crypto.keys import SignatureVerifier
from meshchain.core.transport.noise import CipherState
from meshchain.core.transport.session import (
    SEAL_FRAME_PLAINTEXT,
    MessageArrived,
    SecureSession,
    SessionEstablished,
    SessionEvent,
)
from meshchain.core.wire.codec import encode
from meshchain.core.wire.messages import (
    MESSAGE_CODEC,
    BlockMessage,
    GoodbyeCode,
    Message,
    TransactionMessage,
)
from meshchain.runtime.driver import install_uvloop
from meshchain.runtime.network import PeerConnection

HOST = "127.0.0.1"
BLOCK_TARGET, SMALL_SIZE = 64 * 1024, 200
# Bulk messages in flight (8 MiB) and the ack interval: wide enough that the pipeline of
# 2 processes is not window-bound (32 and 8 held plain there to ~450 MB/s of ~720).
WINDOW, ACK_EVERY = 128, 16
CONCURRENCY = 32
RUN_CAP = 8.0  # seconds: no measurement sends more after this
TARGET_BULK, TARGET_RTT, TARGET_HANDSHAKES = 0.8, 1.3, 500.0


class Link(PeerConnection):
    """The real `PeerConnection`, with a bench app attached."""

    def __init__(self, service: Service, initiator: bool, app: Responder | Client) -> None:
        super().__init__(service, initiator=initiator, label="bench")
        self.app = app


class Service(BenchService):
    """The bench in place of a node; plain or secure sessions."""

    def __init__(self, seed: int, chain_id: bytes, *, plain: bool) -> None:
        super().__init__(seed, chain_id)
        self.plain = plain

    def new_session(self, connection: PeerConnection) -> SecureSession:
        return self.session(connection.initiator)

    def session(self, initiator: bool) -> SecureSession:
        if self.plain:  # duck-typed: PlainSession has the methods PeerConnection calls
            return cast(SecureSession, PlainSession(self.local.hello))
        return self.secure_session(initiator)

    def on_event(self, connection: PeerConnection, event: SessionEvent) -> None:
        app = cast(Link, connection).app
        if isinstance(event, MessageArrived):
            app.message(cast(Link, connection), event.message)
        elif isinstance(event, SessionEstablished):
            app.established()


def make_messages() -> tuple[bytes, BlockMessage, TransactionMessage]:
    """A sealed block of real transactions (~64 KiB encoded) and a 200-byte transaction."""
    kit = ChainKit(seed=7, accounts=8)
    chain, rng, verifier = kit.chain(), random.Random(7), SignatureVerifier()
    vtxs: list[VerifiedTx] = []
    size = 600  # the header and the framing
    while True:  # each transaction adds at least ~170 bytes: a few hundred turns
        i = len(vtxs)
        tx = kit.transfer(chain, i % 8, (i + 1) % 8, 1, 1_000, i // 8, rng.randbytes(i % 257))
        raw = encode(tx)
        if size + len(raw) > BLOCK_TARGET:
            break
        vtxs.append(verify_transaction(tx, verifier, raw))
        size += len(raw)
    block = BlockMessage(kit.next_block(chain, vtxs))
    bare = len(MESSAGE_CODEC.encode(TransactionMessage(kit.transfer(chain, 0, 1, 1, 1, 0))))
    small = TransactionMessage(kit.transfer(chain, 0, 1, 1, 1, 0, bytes(SMALL_SIZE - bare)))
    assert len(MESSAGE_CODEC.encode(small)) == SMALL_SIZE
    return chain.chain_id, block, small


class Responder:
    """The server side of one connection: echoes transactions, acks every 16th block."""

    sessions = 0  # established, all connections of the process

    def __init__(self, ack: TransactionMessage) -> None:
        self.ack, self.blocks = ack, 0

    def established(self) -> None:
        Responder.sessions += 1

    def message(self, link: Link, message: Message) -> None:
        if isinstance(message, TransactionMessage):
            link.send(message)
        else:
            self.blocks += 1
            if self.blocks % ACK_EVERY == 0:
                link.send(self.ack)


class Client:
    """The dialling side: `ready` at `SessionEstablished`, then messages to `on_message`."""

    def __init__(self) -> None:
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_message: Callable[[Message], None] = lambda message: None

    def established(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def message(self, link: Link, message: Message) -> None:
        self.on_message(message)


async def dial(service: Service, port: int) -> tuple[Link, Client]:
    client, loop = Client(), asyncio.get_running_loop()
    _, link = await loop.create_connection(lambda: Link(service, True, client), HOST, port)
    await asyncio.wait_for(client.ready, RUN_CAP)
    return link, client


async def hang_up(link: Link) -> None:
    link.close(GoodbyeCode.NORMAL, "done")
    await asyncio.wait_for(link.closed, RUN_CAP)


async def bulk(link: Link, client: Client, block: BlockMessage, count: int) -> float:
    """MB/s of `count` blocks (fewer if RUN_CAP passes), until the last is acknowledged."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sent = acked = 0
    total = -(-count // ACK_EVERY) * ACK_EVERY
    start = time.perf_counter()

    def top_up() -> None:
        nonlocal sent
        while sent < total and sent - acked < WINDOW:
            link.send(block)
            sent += 1

    def on_ack(message: Message) -> None:
        nonlocal acked, total
        acked += ACK_EVERY
        if time.perf_counter() - start > RUN_CAP:
            total = min(total, sent)
        if acked < total:
            top_up()
        elif not done.done():
            done.set_result(None)

    client.on_message = on_ack
    top_up()
    await asyncio.wait_for(done, RUN_CAP * 4)
    elapsed = time.perf_counter() - start
    return acked * len(MESSAGE_CODEC.encode(block)) / elapsed / 1e6


async def ping_pong(link: Link, client: Client, small: Message, count: int) -> list[float]:
    """p50 and p99 in microseconds and round trips per second, after a tenth as warm-up."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    warmup, sent_at = count // 10, 0
    samples: list[int] = []

    def send() -> None:
        nonlocal sent_at
        sent_at = time.perf_counter_ns()
        link.send(small)

    def on_echo(message: Message) -> None:
        samples.append(time.perf_counter_ns() - sent_at)
        if len(samples) < warmup + count:
            send()
        elif not done.done():
            done.set_result(None)

    client.on_message = on_echo
    send()
    await asyncio.wait_for(done, RUN_CAP * 4)
    micros = sorted(ns / 1000 for ns in samples[warmup:])
    n = len(micros)
    return [micros[(n - 1) // 2], micros[int(0.99 * (n - 1))], n * 1e6 / sum(micros)]


async def handshakes(service: Service, port: int, total: int) -> float:
    """Connections per second, each dialled, established on both sides and hung up."""
    gate = asyncio.Semaphore(CONCURRENCY)
    start, before, completed = time.perf_counter(), Responder.sessions, 0

    async def one(index: int) -> None:
        nonlocal completed
        async with gate:
            if time.perf_counter() - start < RUN_CAP:
                link, _ = await dial(service, port)
                await hang_up(link)
                completed += 1
            # A plain connect completes in the kernel before the accept: keep the dialler
            # within CONCURRENCY of the accepts, or a full backlog drops SYNs (1 s retries).
            for _ in range(100_000):
                if Responder.sessions - before > index - CONCURRENCY:
                    break
                await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(total))), RUN_CAP * 4)
    for _ in range(1_000):  # the server's side of the last ones too
        if Responder.sessions - before >= completed:
            return completed / (time.perf_counter() - start)
        await asyncio.sleep(0.001)
    raise AssertionError("the server did not establish every session")


def memory_handshakes(client: Service, server: Service, total: int) -> float:
    """Two `SecureSession`s wired together, no sockets: the handshake's CPU cost alone."""
    start = time.perf_counter()
    for _ in range(total):
        a, b, events = client.session(True), server.session(False), []
        for _ in range(4):  # message 1; 2; 3 and a hello; the other hello
            b.receive_data(a.data_to_send(), 0.0)
            a.receive_data(b.data_to_send(), 0.0)
            events += a.events() + b.events()
        if sum(isinstance(event, SessionEstablished) for event in events) != 2:
            raise AssertionError("an in-memory handshake did not complete")
    return total / (time.perf_counter() - start)


def cipher_microseconds(block: BlockMessage, repeats: int = 200) -> float:
    """Encrypting and decrypting one encoded block in Noise frames, no I/O: the least
    the secure session must add per message when one core runs both ends."""
    raw = MESSAGE_CODEC.encode(block)
    sender, receiver = CipherState(key=bytes(32)), CipherState(key=bytes(32))
    start = time.perf_counter()
    for _ in range(repeats):
        for offset in range(0, len(raw), SEAL_FRAME_PLAINTEXT):
            frame = sender.encrypt_with_ad(b"", raw[offset : offset + SEAL_FRAME_PLAINTEXT])
            receiver.decrypt_with_ad(b"", frame)
    return (time.perf_counter() - start) / repeats * 1e6


async def serve_both(chain_id: bytes, ack: TransactionMessage) -> list[asyncio.Server]:
    """Plain and secure listeners on 127.0.0.1, in that order."""
    loop = asyncio.get_running_loop()

    def factory(service: Service) -> Callable[[], Link]:
        return lambda: Link(service, False, Responder(ack))

    # Room for bursts of plain connects, which complete in the kernel before the accept.
    return [
        await loop.create_server(factory(new), HOST, 0, backlog=1024)
        for new in (Service(2, chain_id, plain=True), Service(2, chain_id, plain=False))
    ]


def ports(servers: list[asyncio.Server]) -> list[int]:
    return [int(server.sockets[0].getsockname()[1]) for server in servers]


async def close_all(servers: list[asyncio.Server]) -> None:
    for server in servers:
        server.close()
        await server.wait_closed()


async def serve_until_stdin_closes() -> None:
    """The subprocess (`--serve`): the receiving side of the 2-process runs."""
    chain_id, _, small = make_messages()
    servers = await serve_both(chain_id, small)
    print(*ports(servers), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    await close_all(servers)


Results = dict[str, list[float]]
NAMES = ("plain", "secure")


def cpu_seconds(pid: int | None) -> float:
    """CPU time so far of this thread (None), or of process `pid`'s main thread (Linux)."""
    if pid is None:
        return time.thread_time()
    try:
        with open(f"/proc/{pid}/schedstat") as stats:
            return int(stats.read().split()[0]) / 1e9
    except OSError:
        return math.nan


async def measure(sizes: argparse.Namespace, remote_ports: list[int], remote: int) -> Results:
    """Each round, in each setting: a plain and a secure connection open at once and their
    runs back to back, plain first in even rounds and secure first in odd ones (pairs)."""
    chain_id, block, small = make_messages()
    services = (Service(1, chain_id, plain=True), Service(1, chain_id, plain=False))
    servers = await serve_both(chain_id, small)
    count = sizes.megabytes * 10**6 // len(MESSAGE_CODEC.encode(block))
    results: Results = {"block bytes": [float(len(MESSAGE_CODEC.encode(block)))]}

    def keep(key: str, value: float) -> None:
        results.setdefault(key, []).append(value)

    try:
        for round_ in range(sizes.rounds):
            order = (0, 1) if round_ % 2 == 0 else (1, 0)
            for where, port_list in (("1p", ports(servers)), ("2p", remote_ports)):
                links = [await dial(services[side], port_list[side]) for side in (0, 1)]
                load = machine_jiffies(remote)
                for side in order:
                    (link, app), name = links[side], NAMES[side]
                    await bulk(link, app, block, WINDOW * 2)  # warm-up, just before
                    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    cpu = cpu_seconds(None), cpu_seconds(remote)
                    keep(f"bulk {where} {name}", await bulk(link, app, block, count))
                    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
                    keep(f"faults {where} {name}", faults / count)
                    sent = -(-count // ACK_EVERY) * ACK_EVERY  # what bulk() sends
                    keep(f"cpu {where} {name}", (cpu_seconds(None) - cpu[0]) / sent * 1e6)
                    if where == "2p":
                        keep(f"cpu recv {name}", (cpu_seconds(remote) - cpu[1]) / sent * 1e6)
                busy, ours, total = (b - a for a, b in zip(load, machine_jiffies(remote)))
                keep(f"load {where}", 100 * (busy - ours) / total if total > 0 else math.nan)
                for side in order:
                    (link, app), name = links[side], NAMES[side]
                    figures = await ping_pong(link, app, small, sizes.round_trips)
                    for key, value in zip(("p50", "p99", "rt/s"), figures):
                        keep(f"{key} {where} {name}", value)
                for link, _ in links:
                    await hang_up(link)
            for side in order:
                rate = await handshakes(services[side], ports(servers)[side], sizes.handshakes)
                keep(f"hs/s {NAMES[side]}", rate)
            server = Service(2, chain_id, plain=False)
            keep("hs/s memory secure", memory_handshakes(services[1], server, sizes.handshakes))
            keep("cipher us", cipher_microseconds(block))
    finally:
        await close_all(servers)
    return results


def report(results: Results) -> None:
    """The table: best of the rounds; the median of the rounds' paired ratios, on which
    the verdict rests; and for each target the checked value by round."""
    lower = ("p50", "p99")
    best = {k: min(v) if k.split()[0] in lower else max(v) for k, v in results.items()}
    print(
        f"{'':32}{'plain TCP':>11}{'secure':>11}{'ratio':>7}{'median':>8}  {'target':9}"
        f"{'verdict':13}rounds (paired)"
    )
    misses = []

    def row(
        label: str,
        key: str,
        target: str = "",
        ok: Callable[[float], bool] | None = None,
        checked: Callable[[float, float], float] = lambda plain, secure: secure / plain,
    ) -> None:
        plain, secure = best.get(f"{key} plain", 0.0), best[f"{key} secure"]
        pairs = zip(results.get(f"{key} plain", []), results[f"{key} secure"])
        values = [checked(p, s) for p, s in pairs]
        middle = statistics.median(values) if values else 0.0
        shown = f"{plain:11,.1f}{secure:11,.1f}{secure / plain:7.2f}" if plain else ""
        shown = shown or f"{secure:22,.1f}".ljust(29)
        shown += "" if not values else f"{middle:8.2f}" if middle < 100 else f"{middle:8,.0f}"
        verdict, rounds = "", ""
        if ok is not None:
            verdict = "PASS" if ok(middle) else "BELOW TARGET"
            misses.extend([label] if verdict != "PASS" else [])
            rounds = " ".join(f"{v:.2f}" if v < 100 else f"{v:,.0f}" for v in values)
        print(f"{label:32}{shown:37}  {target:9}{verdict:13}{rounds}".rstrip())

    for where, title in (("1p", "1 process"), ("2p", "2 processes")):
        row(f"bulk MB/s, {title}", f"bulk {where}", ">= 0.80x", lambda r: r >= TARGET_BULK)
        row(f"round trip p50 us, {title}", f"p50 {where}", "<= 1.30x", lambda r: r <= TARGET_RTT)
        row(f"round trip p99 us, {title}", f"p99 {where}")
        row(f"round trips/s, {title}", f"rt/s {where}")
    row(
        "handshakes/s TCP, 1 core",
        "hs/s",
        ">= 500/s",
        ok=lambda rate: rate >= TARGET_HANDSHAKES,
        checked=lambda plain, secure: secure,
    )
    row("handshakes/s in memory, 1 core", "hs/s memory")
    print("(plain handshakes/s: TCP connect, accept and hang-up only, for context)")
    # CPU time is what the scheduling noise of a shared machine disturbs least: a run that
    # waits for its core takes longer, not more CPU.
    cpu = {k: statistics.median(v) for k, v in results.items() if k.startswith("cpu ")}
    sides = (("1p", "1 process, both ends"), ("2p", "2 processes, sender"))
    print("CPU us a bulk block (median of rounds)  plain   secure  +secure  plain/secure by round")
    for key, label in (*sides, ("recv", "2 processes, receiver")):
        plain, secure = cpu[f"cpu {key} plain"], cpu[f"cpu {key} secure"]
        pairs = zip(results[f"cpu {key} plain"], results[f"cpu {key} secure"])
        rounds = " ".join(f"{p / s:.2f}" for p, s in pairs)
        print(f"  {label:36}{plain:7.1f}{secure:9.1f}{secure - plain:9.1f}  {rounds}")
    busier = [max(cpu[f"cpu 2p {n}"], cpu[f"cpu recv {n}"]) for n in NAMES]
    print(
        f"(2 processes each on a core of its own would go as fast as the busier side allows:"
        f" {busier[0] / busier[1]:.2f}x plain; 1 process, by CPU time:"
        f" {cpu['cpu 1p plain'] / cpu['cpu 1p secure']:.2f}x)"
    )
    loads = {w: " ".join(f"{v:.0f}" for v in results[f"load {w}"]) for w in ("1p", "2p")}
    print(
        f"(other processes' share of the machine during each round's bulk pair, %:"
        f" 1 process {loads['1p']}; 2 processes {loads['2p']})"
    )
    # Bulk swings with the allocator: a buffer regrown by realloc/mremap faults in fresh pages.
    faults = {
        n: " ".join(f"{f:.0f}" for f in results[f"faults 1p {n}"]) for n in ("plain", "secure")
    }
    print(
        f"(minor page faults per bulk message, 1 process, by round: plain {faults['plain']};"
        f" secure {faults['secure']})"
    )
    # One core running both ends pays for the plain path and for the cipher on top:
    # secure/plain <= plain_us / (plain_us + cipher_us), however lean the session is.
    block_bytes = results["block bytes"][0]
    plain_us = block_bytes / best["bulk 1p plain"]  # MB/s = bytes per microsecond
    cipher_us = best["cipher us"]
    print(
        f"(ChaCha20-Poly1305 alone, encrypt and decrypt: {cipher_us:.1f} us a block; with"
        f" plain at {plain_us:.1f} us a block, 1 process can reach at most"
        f" {plain_us / (plain_us + cipher_us):.2f}x plain)"
    )
    print("PASS: all targets met" if not misses else "BELOW TARGET: " + "; ".join(misses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--rounds", type=int, help="paired rounds (default 6)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    install_uvloop()
    if args.serve:
        asyncio.run(serve_until_stdin_closes())
        return
    full = (200, 10_000, 1_500, 6) if not args.quick else (20, 2_000, 300, 1)
    args.megabytes, args.round_trips, args.handshakes, rounds = full
    args.rounds = args.rounds or rounds
    loop_name = type(asyncio.get_event_loop_policy()).__module__.split(".")[0]
    # Pinned, so that "2 processes" always means two cores (left to the scheduler, they
    # sometimes share one, and a round trip then costs a third of the cross-core one).
    cpus = sorted(os.sched_getaffinity(0))
    pinned = f"CPU {cpus[0]}, the --serve subprocess on CPU {cpus[1]}" if len(cpus) > 1 else ""
    print(
        f"transport bench: {loop_name} loop, Python {sys.version.split()[0]}, "
        f"{len(cpus)} CPUs, {args.rounds} paired round(s); per run: {args.megabytes} MB "
        f"of ~64 KiB blocks, {args.round_trips:,} round trips of {SMALL_SIZE} B, "
        f"{args.handshakes:,} handshakes ({CONCURRENCY} at a time); this process on "
        + (pinned or "the only CPU, and so is the subprocess")
    )
    command = [sys.executable, os.path.abspath(__file__), "--serve"]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if pinned:
            os.sched_setaffinity(0, {cpus[0]})
            os.sched_setaffinity(server.pid, {cpus[1]})
        assert server.stdout is not None
        remote_ports = [int(port) for port in server.stdout.readline().split()]
        if len(remote_ports) != 2:
            raise SystemExit("the --serve subprocess did not start")
        before = machine_jiffies(server.pid)
        results = asyncio.run(measure(args, remote_ports, server.pid))
        busy, ours, total = (b - a for a, b in zip(before, machine_jiffies(server.pid)))
    finally:
        if server.stdin is not None:
            server.stdin.close()  # the subprocess exits at the end of its stdin
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    report(results)
    if total > 0:
        print(
            f"(other processes kept the machine {100 * (busy - ours) / total:.0f}% busy during"
            f" the measurement, this bench {100 * ours / total:.0f}%: a busy machine slows"
            " and scatters every figure)"
        )


def machine_jiffies(pid: int) -> tuple[int, int, int]:
    """CPU time so far, in clock ticks: all CPUs busy, this bench's two processes, all
    CPUs in all (Linux /proc; zeros elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(f) for f in stat.readline().split()[1:9]]
        ours = 0
        for process in ("self", str(pid)):
            with open(f"/proc/{process}/stat") as stat:
                ours += sum(int(f) for f in stat.read().rsplit(")", 1)[1].split()[11:13])
    except (OSError, ValueError, IndexError):
        return 0, 0, 0
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, ours, sum(fields)


if __name__ == "__main__":
    main()

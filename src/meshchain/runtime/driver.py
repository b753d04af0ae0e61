"""Runs a `Node` on asyncio: real time, timers through `loop.call_at`, notices to the log.

`Send` and `Disconnect` go to the attached transport (`runtime/network.py`); a node with
no transport attached (a single-node chain) logs and drops them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Protocol

from meshchain.core.events import (
    Action,
    BlockAccepted,
    BlockMined,
    BlockRejected,
    ChainReorganized,
    Dial,
    Disconnect,
    DoubleSignRefused,
    EquivocationDetected,
    Input,
    MineBlock,
    NodeStopping,
    PeerPunished,
    ScheduleTimer,
    Send,
    SyncFinished,
    SyncProgress,
    TimerFired,
    TransactionAccepted,
    TransactionRejected,
    VoteSigned,
)
from meshchain.core.node import Node
from meshchain.core.wire.messages import AnyMessage
from meshchain.runtime.miner import Miner

log = logging.getLogger("meshchain.node")
# Ours: a sync progress line in the log at most this often (the node reports every second).
SYNC_LOG_INTERVAL = 10.0


def install_uvloop() -> None:
    """Use uvloop when it is installed (round trips 2-4x faster than the default loop)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class Transport(Protocol):
    def send(self, peer: str, message: AnyMessage) -> None: ...

    def disconnect(self, peer: str, reason: str) -> None: ...

    def dial_for_node(self, request: Dial) -> None: ...


class NodeDriver:
    """Feeds inputs into `Node.handle` with wall-clock `now` and executes the actions."""

    def __init__(self, node: Node, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.clock = clock
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.observers: list[Callable[[Action], None]] = []
        # Called with every input once the node has handled it: peers connecting and
        # leaving are inputs, not actions, and the API's subscribers want them. Keep them
        # cheap: they see every message received.
        self.input_observers: list[Callable[[Input], None]] = []
        self.transport: Transport | None = None
        self.miner = Miner(lambda block: self.feed(BlockMined(block)))
        # Once stopped, the node's clock stands still and it opens no connection: the
        # transport closing afterwards still reports disconnections, and the node answers
        # them with dial timers that would otherwise run a headless node on (a node
        # restarted in the same process would meet its own ghost, same identity).
        self.stopped = False
        # False when an observer shows sync progress itself (the CLI's progress bar).
        self.log_sync_progress = True
        self._sync_logged = 0.0

    def feed(self, event: Input) -> list[Action]:
        actions = self.node.handle(event, self.clock())
        for input_observer in self.input_observers:
            input_observer(event)
        observed, execute = bool(self.observers), self._execute
        for action in actions:
            # One TransactionAccepted per transaction relayed: a notice with nothing to
            # do unless someone observes the node, so it costs one test, not a call.
            if observed or type(action) is not TransactionAccepted:
                execute(action)
        return actions

    def execute(self, actions: list[Action]) -> None:
        """Carry out actions the node returned outside `handle`: an operator's call such
        as `node.peer_manager.ban(...)` returns the disconnections it implies."""
        for action in actions:
            self._execute(action)

    def _execute(self, action: Action) -> None:
        for observer in self.observers:
            observer(action)
        match action:
            case TransactionAccepted():  # one per transaction: first, so it costs one test
                pass
            case ScheduleTimer(timer, at):
                if not self.stopped:
                    self._schedule(timer, at)
            case Send(peer, message):
                if self.transport is not None:
                    self.transport.send(peer, message)
            case Disconnect(peer, reason):
                log.info("disconnect %s: %s", peer[:16], reason)
                if self.transport is not None:
                    self.transport.disconnect(peer, reason)
            case MineBlock(block):
                if not self.stopped:
                    self.miner.start(block)
            case Dial(address, kind, _):
                log.debug("dial %s (%s)", address, kind.value)
                if self.transport is not None and not self.stopped:
                    self.transport.dial_for_node(action)
            case PeerPunished(peer, offence, penalty, _):
                log.warning("peer %s: %s -> %s", peer[:16], offence, penalty)
            case BlockAccepted(block_hash, height, tx_count, produced):
                verb = "produced" if produced else "accepted"
                log.info("%s block %d %s (%d txs)", verb, height, block_hash.hex()[:16], tx_count)
            case BlockRejected(block_hash, code, detail, peer):
                log.warning("rejected block %s: %s %s", block_hash.hex()[:16], code.name, detail)
            case TransactionRejected(txid, code, detail, peer):
                log.debug("rejected tx %s: %s %s", txid.hex() if txid else "?", code.name, detail)
            case ChainReorganized(_, _, disconnected, connected):
                log.warning("reorg: -%d +%d blocks", disconnected, connected)
            case SyncProgress(height, target, rate, eta):
                now = self.clock()
                if self.log_sync_progress and now >= self._sync_logged + SYNC_LOG_INTERVAL:
                    self._sync_logged = now
                    left = "" if eta is None else f", about {eta:.0f} s left"
                    log.info("sync: height %d of %d, %.0f blocks/s%s", height, target, rate, left)
            case SyncFinished(height, blocks, seconds):
                log.info(
                    "sync: caught up at height %d (%d blocks in %.1f s)", height, blocks, seconds
                )
            case EquivocationDetected(validator, height, round_, kind):
                log.warning(
                    "equivocation: validator %s, height %d round %d kind %d",
                    validator.hex()[:16],
                    height,
                    round_,
                    kind,
                )
            case VoteSigned(height, round_, step, value):
                shown = value.hex()[:16] if value else "nil"
                log.debug("signed %s at height %d round %d: %s", step, height, round_, shown)
            case DoubleSignRefused(height, round_, step):
                log.error("refused to sign %s twice at height %d round %d", step, height, round_)

    def _schedule(self, timer: str, at: float) -> None:
        loop = asyncio.get_running_loop()
        previous = self._timers.pop(timer, None)
        if previous is not None:
            previous.cancel()
        delay = max(0.0, at - self.clock())
        self._timers[timer] = loop.call_at(loop.time() + delay, self._fire, timer)

    def _fire(self, timer: str) -> None:
        self._timers.pop(timer, None)
        if self.stopped:
            return
        try:
            self.feed(TimerFired(timer))
        except Exception:  # a bug must not silently stop the node's clock
            log.exception("timer %s failed", timer)
            raise

    def stop(self) -> None:
        """Stop the clock, and let the node save what it keeps across restarts."""
        if self.stopped:
            return
        self.stopped = True
        self.miner.stop()
        self.feed(NodeStopping())
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, for a graceful shutdown."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop

"""Proof-of-work mining off the event loop: nonce batches in a worker process.

The node hands the driver a template (`MineBlock`); the miner grinds nonces in batches
of `MINING_BATCH` in one worker process, so the event loop keeps serving peers, and
feeds `BlockMined` back when a batch finds the proof. A newer template replaces the old
search between batches (a new tip makes the old work worthless), so a stale search
costs at most one batch. One worker: a node is one core's worth of hash rate here; a
real miner runs elsewhere.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from meshchain.core.chain.block import Block, BlockHeader
from meshchain.core.consensus.pow import mine_batch

log = logging.getLogger("meshchain.miner")

# Ours: nonces per batch, about 0.1 s of hashing on one core: how long a search for a
# stale template may go on after the tip moved.
MINING_BATCH = 30_000


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """Run in a child process: when the process (strictly, the thread) that started it
    dies, even by SIGKILL, the child gets `signum` instead of living on as an orphan. A
    mining worker gets SIGKILL; a devnet's node processes get SIGTERM, to stop cleanly."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(0)


class Miner:
    def __init__(self, found: Callable[[Block], object]) -> None:
        self._found = found
        self._executor: ProcessPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._template: Block | None = None
        self._generation = 0  # counts templates: a batch for an older one is stale

    def start(self, template: Block) -> None:
        """Search for `template`'s proof, instead of whatever was searched before."""
        self._template = template
        self._generation += 1
        if self._executor is None:
            # spawn: forking a process that runs an event loop and threads is unsafe.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._search())

    async def _search(self) -> None:
        loop = asyncio.get_running_loop()
        generation, start = -1, 0
        while self._template is not None and self._executor is not None:
            template = self._template
            if generation != self._generation:
                generation, start = self._generation, 0
            header: BlockHeader | None = await loop.run_in_executor(
                self._executor, mine_batch, template.header, start, MINING_BATCH
            )
            start += MINING_BATCH
            if header is not None and generation == self._generation:
                self._template = None  # done with it; the node sends the next one
                self._found(Block(header, template.transactions))

    def stop(self) -> None:
        self._template = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

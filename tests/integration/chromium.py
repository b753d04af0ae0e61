"""Headless Chromium driven over the Chrome DevTools Protocol with aiohttp (already a
dependency): start the browser, attach to its page, navigate, evaluate JavaScript, and
poll a condition with a deadline. Exceptions thrown in the page are collected.

The browser runs in its own process group with its own profile directory, and the whole
group is killed when the block ends (and, through the parent-death signal, if the test
process itself dies).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from meshchain.runtime.miner import die_with_parent

BROWSER_START_S = 60.0  # generous: a loaded 2-core machine
CALL_TIMEOUT_S = 30.0  # one DevTools command
POLL_S = 0.1
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)


class PageError(AssertionError):
    """The page threw, or a condition did not come true in time."""


class Page:
    """One page target: `call` a DevTools method, `evaluate` an expression."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.exceptions: list[str] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        answer = self._waiting[call_id] = asyncio.get_running_loop().create_future()
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        try:
            reply = await asyncio.wait_for(answer, CALL_TIMEOUT_S)
        finally:
            self._waiting.pop(call_id, None)
        if "error" in reply:
            raise PageError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise PageError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, what: str, deadline: float) -> Any:
        """Poll until `expression` is truthy; its value. PageError after `deadline` s."""
        end = asyncio.get_running_loop().time() + deadline
        last: Any = None
        while True:
            if self.exceptions:
                raise PageError(f"the page threw: {self.exceptions}")
            try:
                last = await self.evaluate(expression)
            except PageError as error:  # e.g. evaluated while the page was being replaced
                last = error
            else:
                if last:
                    return last
            if asyncio.get_running_loop().time() > end:
                raise PageError(f"timed out waiting for {what}: {expression} gave {last!r}")
            await asyncio.sleep(POLL_S)

    async def navigate(self, url: str) -> None:
        reply = await self.call("Page.navigate", url=url)
        if reply.get("errorText"):
            raise PageError(f"{url}: {reply['errorText']}")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                break
            message = json.loads(frame.data)
            if "id" in message:
                waiting = self._waiting.get(message["id"])
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
            elif message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.exceptions.append(str(details.get("exception", details))[:2000])


async def _debugging_port(process: subprocess.Popen[bytes], profile: Path) -> int:
    """The port Chromium chose, from the DevToolsActivePort file it writes."""
    end = asyncio.get_running_loop().time() + BROWSER_START_S
    active = profile / "DevToolsActivePort"
    while True:
        if process.poll() is not None:
            raise PageError(f"chromium exited with {process.returncode}")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(active.read_text().splitlines()[0])
        if asyncio.get_running_loop().time() > end:
            raise PageError(f"chromium wrote no {active.name} in {BROWSER_START_S:g} s")
        await asyncio.sleep(POLL_S)


@contextlib.asynccontextmanager
async def chromium(binary: str, profile: Path, width: int = 1400) -> AsyncIterator[Page]:
    """A headless Chromium showing about:blank; its page, with Runtime and Page enabled."""
    command = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},1000"]
    process = subprocess.Popen(
        [*command, "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: renderers and helpers die with it
        preexec_fn=functools.partial(die_with_parent, os.getpid(), signal.SIGKILL),
    )
    try:
        port = await _debugging_port(process, profile)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(url, max_msg_size=0) as ws:
                page = Page(ws)
                try:
                    await page.call("Runtime.enable")
                    await page.call("Page.enable")
                    yield page
                finally:
                    await page.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=BROWSER_START_S)

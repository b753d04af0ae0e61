"""The dashboard's files, served by the API server: GET / is the page, GET
/dashboard/{name} its script and style sheet. They ship inside the package (no CDN, no
external font: the page works on a machine without internet), are read once, and only
the names listed here are served, so no path reaches anything else.

The page talks to nothing but its own origin, and the headers hold it to that: a
Content-Security-Policy allowing only this origin's script, style and connections
(JSON-RPC over HTTP, subscriptions over /websocket), no framing by other sites.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from aiohttp import web

STATIC_DIR = "static"  # beside this module, listed in pyproject's package-data
PAGE = "index.html"
# The files and their content types: nothing else is served.
FILES = {
    PAGE: "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
# A Host header fit to be written into the policy's connect-src (else 'self' alone).
SAFE_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}")


@functools.cache
def read_file(name: str) -> bytes:
    return (resources.files("meshchain.api") / STATIC_DIR / name).read_bytes()


def content_security_policy(host: str) -> str:
    """Only this origin; WebSocket named explicitly for browsers whose 'self' lacks it."""
    sockets = f" ws://{host} wss://{host}" if SAFE_HOST.fullmatch(host) else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def file_response(name: str, host: str) -> web.Response:
    """The named file with its type and headers; HTTPNotFound for any other name."""
    content_type = FILES.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=read_file(name),
        content_type=content_type,
        charset="utf-8",
        headers={
            "Content-Security-Policy": content_security_policy(host),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )

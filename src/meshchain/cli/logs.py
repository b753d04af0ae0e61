"""How `meshchain node` logs off a terminal: human lines, or JSON for log collectors.

`json` writes one object a line on stderr — `time` (ISO 8601, UTC), `level`, `logger`,
`message`, and `exception` when there is one — so Loki, Elasticsearch or `jq` read
every record without a parsing rule, multi-line tracebacks included.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import TextIO

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("human", "json")
HUMAN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON; newlines in messages and tracebacks are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)  # ASCII: no raw U+2028 splits a line


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """The root logger at `level` ("info"…) writing `log_format` ("human", "json") to
    `stream` (default: stderr as it is now); in JSON, Python's warnings become records
    too, so stderr stays JSON."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)
    else:
        handler.setFormatter(logging.Formatter(HUMAN_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)

"""`meshchain node --log-format json`: one JSON object a line, tracebacks included, and
the node's own failures logged the same way."""

from __future__ import annotations

import datetime
import io
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshchain.cli.logs import JsonFormatter, configure_logging
from meshchain.cli.main import cli


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers: put pytest's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def _lines(emit: Callable[[logging.Logger], None]) -> list[str]:
    """What `emit` logs, through a handler with the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("meshchain.test")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        emit(log)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    return stream.getvalue().split("\n")[:-1]  # "\n" only: what a log shipper splits on


def test_a_record_is_one_json_object_with_utc_time_level_logger_and_message() -> None:
    before = time.time()
    lines = _lines(lambda log: log.warning("peer %s sent %d bytes\nthen left", "a", 3))
    after = time.time()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert set(entry) == {"time", "level", "logger", "message"}
    assert entry["level"] == "warning"
    assert entry["logger"] == "meshchain.test"
    assert entry["message"] == "peer a sent 3 bytes\nthen left"
    assert entry["time"].endswith("Z")
    moment = datetime.datetime.fromisoformat(entry["time"])
    assert moment.utcoffset() == datetime.timedelta(0)
    assert before - 0.001 <= moment.timestamp() <= after + 0.001


def test_an_exception_travels_as_text_on_the_same_line() -> None:
    def emit(log: logging.Logger) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")

    lines = _lines(emit)
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert (entry["level"], entry["message"]) == ("error", "failed")
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: boom")


def test_unusual_text_stays_on_one_ascii_line() -> None:
    lines = _lines(lambda log: log.info("a\u2028b \u00e9 \x00"))
    assert len(lines) == 1
    assert lines[0].isascii()
    assert len(lines[0].splitlines()) == 1  # not even U+2028 splits it
    assert json.loads(lines[0])["message"] == "a\u2028b \u00e9 \x00"


@pytest.mark.usefixtures("root_logging")
def test_configure_logging_sets_level_and_format_and_routes_warnings() -> None:
    stream = io.StringIO()
    configure_logging("error", "json", stream)
    log = logging.getLogger("meshchain.anything")
    log.warning("below the level")
    log.error("shown %d", 1)
    warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    lines = stream.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["message"] for e in entries if e["logger"] == "meshchain.anything"] == ["shown 1"]
    configure_logging("debug", "human", stream)
    log.debug("plain")
    assert stream.getvalue().splitlines()[-1].endswith("DEBUG   meshchain.anything: plain")


@pytest.mark.usefixtures("root_logging")
def test_the_node_logs_its_failure_as_json_and_accepts_log_level_error(tmp_path: Path) -> None:
    args = ["node", "--datadir", str(tmp_path), "--log-level", "error", "--log-format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    entry = json.loads(lines[0])
    assert entry["level"] == "error"
    assert "not a meshchain data directory" in entry["message"]
    rejected = CliRunner().invoke(cli, [*args[:4], "--log-format", "xml"])
    assert rejected.exit_code == 2

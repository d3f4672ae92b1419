"""The worker's ``--log-format=json`` lines."""

from __future__ import annotations

import json
import logging
import sys

from conveyor.cli.work_command import _JsonLines


def test_a_logged_exception_keeps_its_traceback_in_the_json_line() -> None:
    try:
        raise ValueError("the reason")
    except ValueError:
        record = logging.LogRecord(
            "conveyor.worker",
            logging.ERROR,
            __file__,
            1,
            "bookkeeping failed",
            None,
            sys.exc_info(),
        )
    record.event = "bookkeeping_failed"

    line = _JsonLines().format(record)

    assert "\n" not in line
    body = json.loads(line)
    assert body["message"] == "bookkeeping failed"
    assert body["event"] == "bookkeeping_failed"
    assert body["traceback"].startswith("Traceback (most recent call last):")
    assert body["traceback"].rstrip().endswith("ValueError: the reason")


def test_a_line_without_an_exception_has_no_traceback_key() -> None:
    record = logging.LogRecord(
        "conveyor.worker", logging.INFO, __file__, 1, "worker started", None, None
    )

    assert "traceback" not in json.loads(_JsonLines().format(record))

"""The worker's ``--log-format=json`` lines."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import select
import sys

from conveyor.cli.worker_logging import GroupedLines, JsonLines, TextLines


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

    line = JsonLines().format(record)

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

    assert "traceback" not in json.loads(JsonLines().format(record))


def test_text_and_json_times_match_the_standard_formatting() -> None:
    standard = logging.Formatter("%(asctime)s %(message)s")
    text, lines = TextLines(), JsonLines()
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5):
        record = logging.LogRecord(
            "conveyor.worker", logging.INFO, __file__, 1, "job %s", ("done",), None
        )
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0

        assert text.format(record) == standard.format(record)
        stamp = dt.datetime.fromtimestamp(int(created), dt.timezone.utc)
        expected = stamp.isoformat()[: -len("+00:00")]
        expected += f".{int(record.msecs):03d}+00:00"
        assert json.loads(lines.format(record))["time"] == expected


def test_grouped_lines_wait_for_a_flush_but_a_warning_goes_out_at_once() -> None:
    stream = io.StringIO()
    handler = GroupedLines(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("conveyor.test_grouped_lines")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("first")
        logger.info("second")
        logger.info("third")
        written_before_flush = stream.getvalue()
        handler.flush()
    finally:
        logger.removeHandler(handler)

    assert written_before_flush == "WARNING first\n"
    assert stream.getvalue() == "WARNING first\nINFO second\nINFO third\n"


def test_a_supervised_workers_lines_carry_its_pid() -> None:
    record = logging.LogRecord("conveyor", logging.INFO, "", 0, "DONE x", (), None)
    assert f"[{os.getpid()}] DONE x" in TextLines(with_pid=True).format(record)
    assert json.loads(JsonLines(with_pid=True).format(record))["pid"] == os.getpid()
    assert "pid" not in json.loads(JsonLines().format(record))


def test_lines_to_a_shared_pipe_go_out_whole_in_pieces_of_pipe_buf() -> None:
    class Writes(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return len(text)

    stream = Writes()
    handler = GroupedLines(stream, shared=True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for n in range(300):
        handler.emit(
            logging.LogRecord(
                "conveyor", logging.INFO, "", 0, f"{n:04d}" + "é" * 40, (), None
            )
        )
    handler.flush()
    assert len(stream.writes) > 1
    assert all(len(w.encode()) <= select.PIPE_BUF for w in stream.writes)
    assert all(w.endswith("\n") for w in stream.writes)
    assert "".join(stream.writes).count("\n") == 300

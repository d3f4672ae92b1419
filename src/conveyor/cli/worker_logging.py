"""How ``conveyor queue work`` writes its log: one line per job, as text or
JSON, made cheap enough that a worker running thousands of jobs a second
does not spend its time formatting them."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import Any, TextIO

#: Seconds a line may wait to be written with the lines after it.
FLUSH_SECONDS = 0.05
#: Lines written together at most.
_MAX_PENDING = 500
#: The fields of a job's line that the JSON form carries beside the message.
_JOB_FIELDS = ("event", "job", "job_id", "queue", "attempt", "duration_ms", "status")


class TextLines(logging.Formatter):
    """``<local time> <message>``; the time's text is made once a second."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s")
        self._second = -1
        self._text = ""

    def formatTime(  # noqa: N802 (logging's name)
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self._text},{int(record.msecs):03d}"


class JsonLines(logging.Formatter):
    """One JSON object per line, with the job's fields as keys."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._text = ""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": self._utc(record),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        for key in _JOB_FIELDS:
            if hasattr(record, key):
                body[key] = getattr(record, key)
        if record.exc_info:
            # What went wrong is the point of a logged exception; a log
            # collector must get it in the same object.
            body["traceback"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)

    def _utc(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            moment = dt.datetime.fromtimestamp(second, dt.timezone.utc)
            self._text = moment.isoformat(timespec="seconds")[: -len("+00:00")]
        return f"{self._text}.{int(record.msecs):03d}+00:00"


class GroupedLines(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes lines to a stream in groups: a worker logs the jobs of a
    batch together, and one write per line cost more than the line. A line
    waits at most about :data:`FLUSH_SECONDS`; a warning or worse goes out
    at once, with the lines before it."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._waiting = threading.Event()
        # A daemon: it holds nothing that logging's own flush at exit (or
        # the worker's, see flush_worker_log) would not write.
        threading.Thread(
            target=self._flush_now_and_then, name="conveyor-log", daemon=True
        ).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        if record.levelno >= logging.WARNING or len(self._pending) >= _MAX_PENDING:
            self.flush()
        elif len(self._pending) == 1:
            self._waiting.set()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                text, self._pending = "".join(self._pending), []
                try:
                    self.stream.write(text)
                except Exception:
                    self.handleError(logging.makeLogRecord({"msg": text}))
            super().flush()

    def _flush_now_and_then(self) -> None:
        while True:
            self._waiting.wait()
            time.sleep(FLUSH_SECONDS)
            self._waiting.clear()
            self.flush()


def worker_logging(log_format: str) -> None:
    """Every job's line at INFO, in ``log_format`` (``text`` or ``json``),
    written in groups (see ``GroupedLines``)."""
    logger = logging.getLogger("conveyor")
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)
            handler = GroupedLines(handler.stream)
            logger.addHandler(handler)
        handler.setFormatter(JsonLines() if log_format == "json" else TextLines())
    # Neither form shows the caller's file and line, thread or process, and
    # looking them up was a third of each line's cost (the logging HOWTO's
    # "Optimization" lists these switches). This process runs no job code,
    # which runs in the job process, so nothing else loses them.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def flush_worker_log() -> None:
    """Write the lines still waiting, as the worker ends."""
    for handler in logging.getLogger("conveyor").handlers:
        handler.flush()

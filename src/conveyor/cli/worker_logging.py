"""How ``conveyor queue work`` writes its log: one line per job, as text or
JSON, made cheap enough that a worker running thousands of jobs a second
does not spend its time formatting them."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import select
import threading
import time
from typing import Any, TextIO

#: Seconds a line may wait to be written with the lines after it.
FLUSH_SECONDS = 0.05
#: Lines written together at most.
_MAX_PENDING = 500
#: The fields of a job's line, or of a supervisor's, that the JSON form
#: carries beside the message.
_FIELDS = (
    "event",
    "job",
    "job_id",
    "queue",
    "attempt",
    "duration_ms",
    "status",
    "slot",
    "pid",
    "exit_code",
    "processes",
    "restart_in",
)


class TextLines(logging.Formatter):
    """``<local time> <message>``, or ``<local time> [<pid>] <message>``
    under a supervisor, whose workers share its output; the time's text is
    made once a second."""

    def __init__(self, *, with_pid: bool = False) -> None:
        # The pid is written in once: looking it up per line is switched
        # off below (see worker_logging).
        marked = f"[{os.getpid()}] " if with_pid else ""
        super().__init__(f"%(asctime)s {marked}%(message)s")
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
    """One JSON object per line, with the job's fields as keys (and the
    worker's pid under a supervisor)."""

    def __init__(self, *, with_pid: bool = False) -> None:
        super().__init__()
        self._pid = os.getpid() if with_pid else None
        self._second = -1
        self._text = ""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": self._utc(record),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        if self._pid is not None:
            body["pid"] = self._pid
        for key in _FIELDS:
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

    def __init__(self, stream: TextIO, *, shared: bool = False) -> None:
        super().__init__(stream)
        #: Other processes write to the same pipe (a supervisor's workers):
        #: Linux keeps a write whole only up to PIPE_BUF bytes, so a group
        #: goes out in pieces of whole lines no longer than that.
        self._piece = select.PIPE_BUF if shared else None
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
            lines, self._pending = self._pending, []
            for text in self._pieces(lines):
                try:
                    self.stream.write(text)
                    if self._piece is not None:
                        self.stream.flush()
                except Exception:
                    self.handleError(logging.makeLogRecord({"msg": text}))
            super().flush()

    def _pieces(self, lines: list[str]) -> list[str]:
        if not lines:
            return []
        if self._piece is None:
            return ["".join(lines)]
        pieces: list[str] = []
        piece: list[str] = []
        size = 0
        for line in lines:
            length = len(line.encode())
            if piece and size + length > self._piece:
                pieces.append("".join(piece))
                piece, size = [], 0
            piece.append(line)
            size += length
        pieces.append("".join(piece))
        return pieces

    def _flush_now_and_then(self) -> None:
        while True:
            self._waiting.wait()
            time.sleep(FLUSH_SECONDS)
            self._waiting.clear()
            self.flush()


def worker_logging(log_format: str, *, supervised: bool = False) -> None:
    """Every job's line at INFO, in ``log_format`` (``text`` or ``json``),
    written in groups (see ``GroupedLines``); a ``supervised`` worker marks
    each line with its pid."""
    logger = logging.getLogger("conveyor")
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)
            handler = GroupedLines(handler.stream, shared=supervised)
            logger.addHandler(handler)
        handler.setFormatter(
            JsonLines(with_pid=supervised)
            if log_format == "json"
            else TextLines(with_pid=supervised)
        )
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

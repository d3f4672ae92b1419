"""Messages between the worker and its child process, on a pair of pipes
(never pickle), read with a deadline.

A message is one line: a JSON object, or, for the two the child sends for
every job of a batch, a short tab-separated line that costs far less to
write and read:

- ``S<tab>at<tab>job``: the job ``job`` started at ``at`` (the child's
  ``time.monotonic()``, which on Linux and macOS is the same clock in every
  process), read as ``{"op": "started", "at": at, "job": job}``;
- ``D<tab>seconds<tab>rss_kb``: the job ended well after ``seconds``, read
  as ``{"op": "result", "status": "done", ...}``.

Every other outcome carries an error text and stays JSON.
"""

from __future__ import annotations

import json
import os
import select
import time
from collections import deque
from typing import Any

Message = dict[str, Any]


def send(fd: int, message: Message) -> None:
    send_bytes(fd, encode(message))


def encode(message: Message) -> bytes:
    return (json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8")


def send_bytes(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def started_line(job: str, at: float) -> bytes:
    """``started`` in short form; job names are class names, so hold no tab
    or newline."""
    return f"S\t{at!r}\t{job}\n".encode()


def done_line(seconds: float, rss_kb: int) -> bytes:
    """A ``done`` result in short form."""
    return f"D\t{seconds!r}\t{rss_kb}\n".encode()


class LineReader:
    """Reads messages from a pipe, waiting at most until a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        #: Whole lines read and not taken yet; a chunk often holds many.
        self._lines: deque[bytes] = deque()
        self._partial = b""

    def read(self, timeout: float | None) -> Message | None:
        """The next message; ``None`` when ``timeout`` seconds passed first.
        Raises ``EOFError`` when the other side closed the pipe."""
        if self._lines:
            return _decode(self._lines.popleft())
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._lines:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                return None
            self._fill()
        return _decode(self._lines.popleft())

    def poll(self) -> Message | None:
        """The next message if one has already arrived, without waiting."""
        if not self._lines:
            ready, _, _ = select.select([self.fd], [], [], 0)
            if not ready:
                return None
            self._fill()
            if not self._lines:
                return None
        return _decode(self._lines.popleft())

    def _fill(self) -> None:
        chunk = os.read(self.fd, 65536)
        if not chunk:
            raise EOFError("the other side closed the pipe")
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        self._lines.extend(lines)


def _decode(line: bytes) -> Message:
    kind = line[:1]
    if kind == b"S":
        _, at, job = line.decode().split("\t", 2)
        return {"op": "started", "at": float(at), "job": job}
    if kind == b"D":
        _, seconds, rss_kb = line.split(b"\t")
        return {
            "op": "result",
            "status": "done",
            "seconds": float(seconds),
            "rss_kb": int(rss_kb),
        }
    message: Message = json.loads(line)
    return message

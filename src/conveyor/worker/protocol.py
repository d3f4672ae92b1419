"""Messages between the worker and its child process: one JSON object per
line on a pair of pipes (never pickle), read with a deadline."""

from __future__ import annotations

import json
import os
import select
import time
from typing import Any

Message = dict[str, Any]


def send(fd: int, message: Message) -> None:
    data = (json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8")
    while data:
        written = os.write(fd, data)
        data = data[written:]


class LineReader:
    """Reads JSON lines from a pipe, waiting at most until a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""

    def read(self, timeout: float | None) -> Message | None:
        """The next message; ``None`` when ``timeout`` seconds passed first.
        Raises ``EOFError`` when the other side closed the pipe."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("the other side closed the pipe")
            self._buffer += chunk
        return self._take_line()

    def poll(self) -> Message | None:
        """The next message if one has already arrived, without waiting."""
        if b"\n" not in self._buffer:
            ready, _, _ = select.select([self.fd], [], [], 0)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("the other side closed the pipe")
            self._buffer += chunk
            if b"\n" not in self._buffer:
                return None
        return self._take_line()

    def _take_line(self) -> Message:
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: Message = json.loads(line)
        return message

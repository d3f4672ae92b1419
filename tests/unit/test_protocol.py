"""The worker's pipe to its job process: short lines for the messages sent
per job, JSON for the rest, several to a read."""

from __future__ import annotations

import os

import pytest

from conveyor.worker.protocol import (
    LineReader,
    done_line,
    encode,
    send_bytes,
    started_line,
)


def test_messages_written_together_are_read_one_by_one_in_order() -> None:
    read_fd, write_fd = os.pipe()
    reader = LineReader(read_fd)
    send_bytes(
        write_fd,
        done_line(0.25, 1024)
        + started_line("SendMail", 12.5)
        + encode({"op": "result", "status": "error", "summary": "tab\there é"}),
    )

    assert reader.read(1) == {
        "op": "result",
        "status": "done",
        "seconds": 0.25,
        "rss_kb": 1024,
    }
    assert reader.read(1) == {"op": "started", "at": 12.5, "job": "SendMail"}
    assert reader.read(1) == {
        "op": "result",
        "status": "error",
        "summary": "tab\there é",
    }
    assert reader.poll() is None
    os.close(write_fd)
    with pytest.raises(EOFError):
        reader.read(1)
    os.close(read_fd)


def test_a_line_cut_across_two_writes_is_read_whole() -> None:
    read_fd, write_fd = os.pipe()
    reader = LineReader(read_fd)
    line = started_line("Report", 3.0)

    send_bytes(write_fd, line[:5])
    assert reader.read(0.01) is None
    send_bytes(write_fd, line[5:])

    assert reader.read(1) == {"op": "started", "at": 3.0, "job": "Report"}
    os.close(write_fd)
    os.close(read_fd)

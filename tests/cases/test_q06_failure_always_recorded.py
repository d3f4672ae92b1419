"""Case Q06: a failure is never lost because failure handling fails too.

A job fails for good (``--tries`` used up) with an exception that makes the
failure path itself awkward: one whose ``__str__`` raises, one holding an
object that cannot be pickled (a lock, an open socket), one whose message
holds a lone surrogate, or a job whose ``failed()`` hook raises. Each job
leaves ``jobs`` and has exactly one ``failed_jobs`` row with its original
payload and at least the exception's type name; the worker keeps running;
``queue failed`` lists them and ``queue retry ID`` puts one back."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from conveyor import Queue
from helpers import (
    failed_by_job,
    queue_cli,
    recorded,
    rows,
    steps,
    work,
    write_jobs,
)


def failed_cells(stdout: str) -> dict[str, list[str]]:
    """The rows of the ``queue failed`` table by job name: id, queue, job,
    failed at, error."""
    return {
        cells[2]: cells
        for line in stdout.splitlines()
        if len(cells := [cell.strip() for cell in line.split("│")]) == 5
        and cells[0].isdigit()
    }


def test_unprintable_errors_and_raising_failed_hooks_leave_one_failed_row(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """A job raising an exception whose ``__str__`` raises, and a job whose
    ``failed()`` raises, each leave exactly one failed_jobs row naming what
    went wrong, and the worker runs the next job."""
    write_jobs(tmp_path, "app")
    write_jobs(
        tmp_path,
        "hostile",
        """
        class Unprintable(Exception):
            def __str__(self):
                raise RuntimeError("no text for you")


        class BadMessage(Job):
            def handle(self, data):
                record(self, step="handle")
                raise Unprintable()


        class BadHook(Job):
            def handle(self, data):
                record(self, step="handle")
                raise ValueError("handle failed")

            def failed(self, data, error):
                record(self, step="failed")
                raise RuntimeError("failed() failed too")
        """,
    )
    queue.push("BadMessage", None)
    queue.push("BadHook", None)
    queue.push("Record", "after")

    result = work(tmp_path, database_url, "--tries", "2")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "job", "step") == [
        ("BadMessage", "handle"),
        ("BadMessage", "handle"),
        ("BadHook", "handle"),
        ("BadHook", "handle"),
        ("BadHook", "failed"),
        ("Record", None),
    ]
    failed = failed_by_job(engine)
    assert sorted(failed) == ["BadHook", "BadMessage"]
    assert len(rows(engine, "failed_jobs")) == 2
    assert "Unprintable" in failed["BadMessage"]["exception"]
    assert "ValueError: handle failed" in failed["BadHook"]["exception"]
    assert rows(engine, "jobs") == []


def test_an_error_message_with_a_lone_surrogate_is_still_recorded(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """An exception whose message holds a lone surrogate (say, a filename
    decoded with surrogateescape) leaves one failed_jobs row naming the
    exception and its message, and the worker runs the next job."""
    write_jobs(tmp_path, "app")
    write_jobs(
        tmp_path,
        "surrogate",
        """
        class BadBytes(Job):
            def handle(self, data):
                record(self)
                raise ValueError("cannot open caf\\udce9.txt")
        """,
    )
    queue.push("BadBytes", None)
    queue.push("Record", "after")

    result = work(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "job") == [("BadBytes",), ("Record",)]
    [failed] = rows(engine, "failed_jobs")
    assert "ValueError: cannot open caf" in failed["exception"]


def test_a_job_calling_sys_exit_or_raising_keyboardinterrupt_is_a_job_error(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``sys.exit(3)`` and ``raise KeyboardInterrupt`` inside ``handle`` fail
    that job with the exception's type and traceback (not a bare "exited
    with code 3"), in the same job process, and the next job runs."""
    write_jobs(tmp_path, "app")
    write_jobs(
        tmp_path,
        "exits",
        """
        import os
        import sys


        class Exits(Job):
            def handle(self, data):
                record(self, pid=os.getpid())
                sys.exit(3)


        class Interrupts(Job):
            def handle(self, data):
                record(self, pid=os.getpid())
                raise KeyboardInterrupt("from the job")
        """,
    )
    queue.push("Exits", None)
    queue.push("Interrupts", None)
    queue.push("Record", "after")

    result = work(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "job") == [("Exits",), ("Interrupts",), ("Record",)]
    pids = {run["pid"] for run in recorded(tmp_path) if "pid" in run}
    assert len(pids) == 1, "the job process was replaced"
    failed = failed_by_job(engine)
    assert sorted(failed) == ["Exits", "Interrupts"]
    assert "sys.exit(3)" in failed["Exits"]["exception"]
    assert failed["Exits"]["exception"].rstrip().endswith("SystemExit: 3")
    assert "KeyboardInterrupt: from the job" in failed["Interrupts"]["exception"]
    assert rows(engine, "jobs") == []


#: Jobs whose exceptions cannot be pickled (Celery's crash): each records
#: whether ``pickle.dumps`` of its exception really fails, then raises it.
UNPICKLABLE_JOBS = """
import pickle
import socket
import threading


def picklable(exc):
    try:
        pickle.dumps(exc)
    except Exception:
        return False
    return True


class HoldsALock(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class LockError(Job):
    def handle(self, data):
        error = HoldsALock("gave up waiting")
        record(self, picklable=picklable(error))
        raise error


class SocketError(Job):
    def handle(self, data):
        peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        error = ConnectionError("no answer from the peer", peer)
        record(self, picklable=picklable(error))
        raise error
"""


def test_exceptions_holding_a_lock_or_a_socket_are_recorded_and_retried(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """With ``--tries=1``, a job raising an exception that holds a
    ``threading.Lock`` and one raising an exception with an open socket in
    its args (neither picklable) each leave ``jobs`` for exactly one
    failed_jobs row with the payload as pushed and the exception's type and
    message; the worker runs the next job. ``queue failed`` lists both with
    their error lines, and ``queue retry ID`` puts one back with its payload
    and no attempts, leaving the other; run again, it fails again into a
    single row of its own."""
    write_jobs(tmp_path, "app")
    write_jobs(tmp_path, "unpicklable", UNPICKLABLE_JOBS)
    lock_id = queue.push("LockError", {"order": 1})
    socket_id = queue.push("SocketError", {"order": 2})
    queue.push("Record", "after")
    pushed = {row["id"]: row["payload"] for row in rows(engine, "jobs")}

    result = work(tmp_path, database_url, "--tries", "1")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "job", "picklable") == [
        ("LockError", False),
        ("SocketError", False),
        ("Record", None),
    ]
    assert rows(engine, "jobs") == []
    assert len(rows(engine, "failed_jobs")) == 2
    failed = failed_by_job(engine)
    assert failed["LockError"]["payload"] == pushed[lock_id]
    assert failed["SocketError"]["payload"] == pushed[socket_id]
    assert "HoldsALock: gave up waiting" in failed["LockError"]["exception"]
    assert "ConnectionError" in failed["SocketError"]["exception"]
    assert "no answer from the peer" in failed["SocketError"]["exception"]

    listed = queue_cli(tmp_path, database_url, "failed")

    assert listed.exit_code == 0, listed.output
    cells = failed_cells(listed.stdout)
    assert sorted(cells) == ["LockError", "SocketError"], listed.stdout
    lock_row, socket_row = cells["LockError"], cells["SocketError"]
    assert lock_row[:2] == [str(failed["LockError"]["id"]), "default"]
    assert lock_row[4].endswith(".HoldsALock: gave up waiting"), lock_row
    assert socket_row[:2] == [str(failed["SocketError"]["id"]), "default"]
    assert socket_row[4].startswith("ConnectionError: "), socket_row

    retried = queue_cli(
        tmp_path, database_url, "retry", str(failed["SocketError"]["id"])
    )

    assert retried.exit_code == 0, retried.output
    assert "pushed 1 failed job(s)" in retried.stdout
    [back] = rows(engine, "jobs")
    assert (back["queue"], back["payload"]) == ("default", pushed[socket_id])
    assert (back["attempts"], back["reserved_at"]) == (0, None)
    assert back["available_at"] <= int(time.time())
    assert [row["id"] for row in rows(engine, "failed_jobs")] == [
        failed["LockError"]["id"]
    ]

    again = work(tmp_path, database_url, "--tries", "1")

    assert again.exit_code == 0, again.output
    assert [(run["job"], run["attempt"]) for run in recorded(tmp_path)[3:]] == [
        ("SocketError", 1)
    ]
    assert rows(engine, "jobs") == []
    assert sorted(failed_by_job(engine)) == ["LockError", "SocketError"]
    assert len(rows(engine, "failed_jobs")) == 2

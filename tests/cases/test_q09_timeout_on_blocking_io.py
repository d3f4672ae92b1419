"""Case Q09: the timeout holds even when a job blocks in I/O or C code.

A job connects to a local TCP server that accepts and never answers, with
no socket timeout of its own, under a worker ``--timeout=5 --tries=2``
(scaled down here to 2 s, or a class ``timeout = 1``, to keep the suite
fast); a job spinning in C code (``sum(range(10**13))``) is just as deaf to
signals. After about the timeout the job's process is killed, the attempt
counts, the job is retried and then moved to ``failed_jobs`` with a
timeout error; a job pushed after it still runs, and the worker is never
blocked for good."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor import Queue
from helpers import (
    Spawn,
    count,
    failed_by_job,
    gone,
    push,
    rows,
    runs,
    steps,
    table,
    work,
    write_job,
    write_jobs,
)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers;
    its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            held.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    server.close()


@pytest.mark.slow
def test_a_job_stuck_in_c_code_is_stopped_by_the_timeout(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """``sum(range(10**13))`` never returns to the interpreter;
    ``--timeout=2`` kills its process after about 2 s on each of the two
    tries, the job lands in ``failed_jobs`` with a timeout message, and the
    next job still runs."""
    [stuck_id] = push(database_url, "Stuck", None)
    [record_id] = push(database_url, "Record", None)
    worker = spawn("--timeout=2", "--tries=2", "--sleep=0.1", "--stop-when-empty")

    code = worker.wait(timeout=30)

    assert code == 0, worker.log
    attempts = runs(app, "start")
    assert [(r["id"], r["attempt"]) for r in attempts] == [(stuck_id, 1), (stuck_id, 2)]
    assert 1.9 <= attempts[1]["time"] - attempts[0]["time"] < 5, worker.log
    assert all(gone(r["pid"]) for r in attempts)
    assert runs(app, "end") == []
    assert [r["id"] for r in runs(app, "run")] == [record_id]
    [failed] = table(engine, "failed_jobs")
    assert json.loads(failed["payload"])["job"] == "Stuck"
    assert "TimeoutError" in failed["exception"]
    assert "2 s" in failed["exception"]
    assert count(engine, "jobs") == 0


@pytest.mark.slow
def test_a_job_past_its_timeout_is_stopped_and_the_next_job_runs(
    tmp_path: Path,
    database_url: str,
    queue: Queue,
    engine: sa.Engine,
    silent_server: int,
) -> None:
    """A job with ``timeout = 1`` busy in C code (``sum(range(10**13))``),
    and one blocked reading a socket that never answers, are each stopped
    after about a second and failed as a timed-out attempt; the job after
    them still runs."""
    write_jobs(tmp_path, "app")
    write_jobs(
        tmp_path,
        "slow",
        """
        import socket


        class Spin(Job):
            timeout = 1

            def handle(self, data):
                record(self)
                sum(range(10**13))


        class Hang(Job):
            timeout = 1

            def handle(self, data):
                record(self)
                with socket.create_connection(("127.0.0.1", data["port"])) as peer:
                    peer.recv(1)
        """,
    )
    queue.push("Spin", None)
    queue.push("Hang", {"port": silent_server})
    queue.push("Record", "after")
    started = time.monotonic()

    result = work(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 20
    assert steps(tmp_path, "job", "attempt") == [
        ("Spin", 1),
        ("Hang", 1),
        ("Record", 1),
    ]
    failed = failed_by_job(engine)
    assert sorted(failed) == ["Hang", "Spin"]
    for row in failed.values():
        assert "TimeoutError" in row["exception"]
        assert "1 s" in row["exception"]
    assert rows(engine, "jobs") == []


#: A job that connects with no socket timeout and waits for an answer that
#: never comes, recording ``start`` and ``connected`` in ``runs.log`` the way
#: :data:`helpers.DEMO_JOBS` do (its ``record`` is imported from there).
HANG_JOB = """
    import socket

    from conveyor import Job
    from jobs.demo import record


    class Hang(Job):
        def handle(self, data):
            record(self, "start")
            peer = socket.create_connection(("127.0.0.1", data["port"]))
            assert peer.gettimeout() is None
            record(self, "connected")
            peer.recv(1)
            record(self, "end")
"""


@pytest.mark.slow
def test_a_socket_read_that_never_returns_is_stopped_on_each_try(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn, silent_server: int
) -> None:
    """The case's scenario with ``--timeout=2 --tries=2`` (the case's 5 s
    scaled down): the job connects and blocks in ``recv``; about 2 s later
    its process is killed, the attempt counted (attempts 1 and 2, each with
    a fresh process), and after the second it is in ``failed_jobs`` with a
    timeout error while ``Record``, pushed after it, still runs; the worker
    exits 0, well before the job could have returned on its own."""
    write_job(app, "hang", HANG_JOB)
    [hang_id] = push(database_url, "Hang", {"port": silent_server})
    [record_id] = push(database_url, "Record", {"after": "Hang"})
    started = time.monotonic()
    worker = spawn("--timeout=2", "--tries=2", "--sleep=0.1", "--stop-when-empty")

    code = worker.wait(timeout=30)

    assert code == 0, worker.log
    assert time.monotonic() - started < 15, worker.log
    attempts = runs(app, "start")
    assert [(r["id"], r["attempt"]) for r in attempts] == [(hang_id, 1), (hang_id, 2)]
    connected = runs(app, "connected")
    assert [(r["id"], r["attempt"]) for r in connected] == [(hang_id, 1), (hang_id, 2)]
    assert 1.9 <= attempts[1]["time"] - attempts[0]["time"] < 5, worker.log
    assert attempts[0]["pid"] != attempts[1]["pid"]
    assert all(gone(r["pid"]) for r in attempts)
    assert runs(app, "end") == []
    assert [(r["id"], r["data"]) for r in runs(app, "run")] == [
        (record_id, {"after": "Hang"})
    ]
    assert "RETRY    Hang" in worker.log and "FAILED   Hang" in worker.log, worker.log
    [failed] = table(engine, "failed_jobs")
    assert json.loads(failed["payload"])["job"] == "Hang"
    assert "TimeoutError: the job ran longer than 2 s" in failed["exception"]
    assert count(engine, "jobs") == 0

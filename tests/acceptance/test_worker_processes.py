"""``conveyor queue work`` as real processes: workers starting together on
a new database, a worker killed alone, a worker that goes silent, a second
SIGINT, ``queue restart``, and the database dropping the worker's
connections.

The failure cases (Q01 to Q10) are in ``tests/cases``; the jobs, the
``app`` and ``spawn`` fixtures and the helpers are shared with them
(``helpers.DEMO_JOBS``, ``conftest.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import (
    Spawn,
    WorkerProcess,
    count,
    create_tables,
    drop_worker_connections,
    gone,
    push,
    runs,
    table,
    tagged_url,
    wait_for_workers,
    wait_until,
)

# -- starting ------------------------------------------------------------------


def test_workers_started_together_on_a_new_database_all_run(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Four workers started at once on a database without the queue's tables
    (a first deploy): each creates what is missing without tripping over
    the others, and all of them run."""
    workers = [spawn("--sleep=0.2") for _ in range(4)]

    wait_for_workers(engine, workers)

    assert count(engine, "jobs") == 0


def test_a_sigterm_while_the_worker_starts_stops_it_cleanly(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """SIGTERM to the group while the job modules still import (one takes
    2 s): the worker exits 0 without taking a job or leaving its row in
    ``job_workers``, instead of dying of the signal."""
    marker = app / "importing"
    (app / "jobs" / "slow_import.py").write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(2)\n"
    )
    create_tables(database_url)
    [job_id] = push(database_url, "Record", "untouched")
    worker = spawn("--sleep=0.1")
    wait_until(marker.exists, 15, "the job modules are importing")

    worker.signal(signal.SIGTERM)

    assert worker.wait(timeout=15) == 0, worker.log
    assert "Traceback" not in worker.log
    [left] = table(engine, "jobs")
    assert (left["id"], left["attempts"], left["reserved_at"]) == (job_id, 0, None)
    assert count(engine, "job_workers") == 0
    assert runs(app) == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def forwarder(listen_port: int, target: tuple[str, int]) -> Iterator[None]:
    """A TCP forwarder on ``listen_port`` to ``target``: the database server
    appearing at an address where, until now, nothing answered. On leaving,
    it closes every connection it carried: the server going away again."""
    server = socket.create_server(("127.0.0.1", listen_port))
    server.settimeout(0.1)
    stop = threading.Event()
    carried: list[socket.socket] = []

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(target)
            carried.extend((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        for connection in carried:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


@pytest.mark.databases("postgresql", "mysql")
def test_a_worker_started_while_its_database_is_away_waits_for_it(
    app: Path, database_url: str, spawn: Spawn
) -> None:
    """A worker whose server does not answer yet (it is restarting, say)
    logs that and keeps trying instead of exiting; once the server answers
    it starts and runs the job waiting for it."""
    real = sa.make_url(database_url)
    port = free_port()
    away = real.set(port=port).render_as_string(hide_password=False)
    create_tables(database_url)
    [job_id] = push(database_url, "Record", "after the outage")
    worker = spawn("--sleep=0.1", url=away)

    wait_until(lambda: "database unreachable" in worker.log, 15, "a warning logged")
    assert worker.process.poll() is None, worker.log
    with forwarder(port, (real.host or "127.0.0.1", real.port or 0)):
        [ran] = wait_until(lambda: runs(app, "run"), 30, "the job ran")
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0, worker.log

    assert (ran["id"], ran["data"]) == (job_id, "after the outage")


@pytest.mark.databases("postgresql", "mysql")
def test_a_worker_stopped_while_its_database_is_away_says_what_it_left(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """The server goes away under an idle worker, which waits for it; a
    stop then (SIGTERM, then SIGINT as it still waits) ends the worker, and
    its log says that what it could not tidy is left to the lease, not that
    it goes on and reconnects."""
    real = sa.make_url(database_url)
    port = free_port()
    via = real.set(port=port).render_as_string(hide_password=False)
    create_tables(database_url)
    push(database_url, "Record", "before the outage")
    with forwarder(port, (real.host or "127.0.0.1", real.port or 0)):
        worker = spawn("--sleep=0.1", url=via)
        wait_until(lambda: runs(app, "run"), 20, "the job ran")
    wait_until(lambda: "trying again" in worker.log, 15, "the outage noticed")

    worker.signal(signal.SIGTERM)
    time.sleep(0.5)
    worker.signal(signal.SIGINT)
    worker.wait(timeout=15)

    stopping = worker.log[worker.log.index("trying again") :]
    assert "the worker stops without tidying up" in stopping, worker.log
    assert "goes on and reconnects" not in stopping, worker.log
    assert "Traceback" not in worker.log
    # Its row is left for the lease to clear, as a killed worker's is.
    assert count(engine, "job_workers") == 1


@pytest.mark.databases("postgresql", "mysql")
@pytest.mark.parametrize("wrong", ["database", "user", "user without password"])
def test_a_worker_whose_settings_the_server_refuses_stops_with_one_line(
    app: Path, database_url: str, spawn: Spawn, wrong: str
) -> None:
    """A database or user that does not exist is not a server that is
    down: the worker says so in one line and exits 1 instead of waiting."""
    real = sa.make_url(database_url)
    bad = {
        "database": real.set(database="conveyor_no_such_db"),
        "user": real.set(username="conveyor_no_such_user", password="x"),
        "user without password": real.set(
            username="conveyor_no_such_user", password=None
        ),
    }[wrong]
    worker = spawn("--sleep=0.1", url=bad.render_as_string(hide_password=False))

    assert worker.wait(timeout=30) == 1, worker.log
    lines = [line for line in worker.log.splitlines() if line.strip()]
    assert len(lines) == 1, worker.log
    assert lines[0].startswith("error: the database refused this worker: "), lines
    assert "check database_url" in lines[0]
    assert "Traceback" not in worker.log


# -- a worker killed alone ----------------------------------------------------


def test_a_worker_killed_alone_takes_its_job_process_down(
    app: Path, database_url: str, spawn: Spawn
) -> None:
    """SIGKILL to the worker's pid only (not its group): the job process
    dies with it (``PR_SET_PDEATHSIG``) instead of running on unsupervised."""
    push(database_url, "Sleep", {"seconds": 30})
    worker = spawn()

    [started] = wait_until(lambda: runs(app, "start"), 15, "the job started")
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(timeout=5)

    wait_until(lambda: gone(started["pid"]), 5, "the job process died")


# -- a worker that goes silent ------------------------------------------------


def heartbeat_of(engine: sa.Engine, worker: WorkerProcess) -> int | None:
    with engine.connect() as connection:
        query = sa.text("SELECT heartbeat_at FROM job_workers WHERE pid = :pid")
        beat = connection.execute(query, {"pid": worker.pid}).scalar()
        return None if beat is None else int(beat)


def freeze(engine: sa.Engine, worker: WorkerProcess) -> float:
    """SIGSTOP ``worker``'s group just after one of its heartbeats has
    committed, never in the middle of one, where its open transaction
    would hold rows others need; when it froze."""
    beat = heartbeat_of(engine, worker)
    wait_until(
        lambda: heartbeat_of(engine, worker) not in (beat, None),
        5,
        "a heartbeat",
        poll=0.01,
    )
    time.sleep(0.1)
    worker.signal(signal.SIGSTOP)
    return time.time()


@pytest.mark.slow
def test_a_silent_workers_job_is_released_early_and_its_late_outcome_refused(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Worker A is frozen (SIGSTOP to its group) while it runs a job, so its
    heartbeat stops although its connections stay open. With
    ``heartbeat_timeout = 5`` and ``retry_after = 60``, worker B presumes A
    dead and releases its job after about 5 s, not 60, and runs it as
    attempt 2. B is then frozen for a moment and A woken: A finishes its
    copy first, but its lease token no longer holds, so it deletes nothing,
    logs that its outcome was not recorded and registers again. B, woken,
    deletes the job; both stop cleanly; nothing is failed or left."""
    (app / "conveyor.toml").write_text(
        "[queue]\nretry_after = 60\nheartbeat_timeout = 5\n"
    )
    go = app / "go"
    [job_id] = push(database_url, "Gate", {"go": str(go)})
    first = spawn("--timeout=30", "--tries=3", "--sleep=0.1")
    wait_until(lambda: runs(app, "start"), 15, "attempt 1 started")

    frozen_at = freeze(engine, first)
    second = spawn("--timeout=30", "--tries=3", "--sleep=0.1")
    wait_until(lambda: len(runs(app, "start")) == 2, 30, "attempt 2 started")
    # B stays frozen for well under heartbeat_timeout, so A, once awake,
    # cannot take B for dead in turn.
    freeze(engine, second)
    first.signal(signal.SIGCONT)
    go.touch()
    wait_until(lambda: "not recorded" in first.log, 3, "A finished its copy")
    [held] = table(engine, "jobs")
    second.signal(signal.SIGCONT)
    wait_until(lambda: count(engine, "jobs") == 0, 15, "B deleted the job")
    for worker in (first, second):
        worker.signal(signal.SIGTERM)
    codes = [worker.wait(timeout=15) for worker in (first, second)]

    assert codes == [0, 0], [first.log, second.log]
    starts = runs(app, "start")
    assert [(r["id"], r["attempt"]) for r in starts] == [(job_id, 1), (job_id, 2)]
    # A's last heartbeat came at most a second before it froze.
    waited = starts[1]["time"] - frozen_at
    assert 5 - 1 <= waited < 20, f"released {waited:.1f} s after A froze"
    assert "presumed dead; released the 1 job(s) it held" in second.log
    assert (held["id"], held["attempts"]) == (job_id, 2)
    assert "its lease ran out while it ran" in first.log
    assert "outcome (delete) was not recorded" in first.log
    assert "presumed dead after a silence" in first.log
    assert "DONE     Gate" in second.log and "lease ran out" not in second.log
    assert [r["id"] for r in runs(app, "end")] == [job_id, job_id]
    assert count(engine, "failed_jobs") == 0


# -- cold stop on a second SIGINT ---------------------------------------------


def test_a_second_sigint_stops_the_job_and_puts_it_back(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Two Ctrl-Cs: the worker kills the job process and exits within a
    couple of seconds; the job is available again at once, the interrupted
    attempt not counted (the shutdown stopped it, not the job), so a later
    worker with the default --tries=1 still runs it."""
    [job_id] = push(database_url, "Sleep", {"seconds": [30, 0]})
    worker = spawn("--sleep=0.1")

    [started] = wait_until(lambda: runs(app, "start"), 15, "the job started")
    worker.signal(signal.SIGINT)
    time.sleep(0.3)
    worker.signal(signal.SIGINT)
    second_signal = time.monotonic()
    code = worker.wait(timeout=10)
    stopped_in = time.monotonic() - second_signal

    assert code >= 0, f"killed by signal {-code}: {worker.log}"
    assert stopped_in < 3, worker.log
    assert gone(started["pid"])
    assert runs(app, "end") == []
    [row] = table(engine, "jobs")
    assert row["reserved_at"] is None
    assert row["reservation"] is None
    assert row["attempts"] == 0
    assert row["available_at"] <= time.time()

    later = spawn("--sleep=0.1", "--stop-when-empty")
    assert later.wait(timeout=15) == 0, later.log
    assert [(r["id"], r["attempt"]) for r in runs(app, "end")] == [(job_id, 1)]
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0


# -- queue restart ------------------------------------------------------------


def restart(app: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "queue", "restart"]
        + ["--database", database_url],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_queue_restart_stops_idle_workers_but_not_later_ones(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """``queue restart`` makes both idle workers exit with code 0 within
    about a second of their next heartbeat, even with a long ``--sleep``;
    a worker started afterwards keeps running and takes jobs."""
    create_tables(database_url)
    idle = [spawn("--sleep=10"), spawn("--sleep=10")]
    wait_for_workers(engine, idle)
    time.sleep(0.5)  # both are now in their first idle sleep

    asked = restart(app, database_url)
    requested = time.monotonic()
    assert asked.returncode == 0, asked.stderr
    assert "asked 2 worker(s)" in asked.stdout
    # Well under --sleep: the flag must be seen during an idle sleep too.
    deadline = requested + 3
    codes = [worker.wait(max(deadline - time.monotonic(), 0.1)) for worker in idle]
    assert codes == [0, 0], [worker.log for worker in idle]

    fresh = spawn("--sleep=0.1")

    wait_for_workers(engine, [fresh])
    time.sleep(1.5)
    assert fresh.process.poll() is None, fresh.log
    push(database_url, "Record", None)
    wait_until(lambda: runs(app, "run"), 10, "the later worker ran a job")
    fresh.signal(signal.SIGTERM)
    assert fresh.wait(timeout=10) == 0, fresh.log


def test_queue_restart_lets_the_running_job_finish_and_takes_no_other(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """``queue restart`` while a job runs: that job finishes, the job
    waiting behind it is not taken, and the worker exits with code 0. The
    job ends two heartbeats (about a second each) after the restart was
    asked for, however long starting ``queue restart`` took."""
    go = app / "go"
    [gate_id] = push(database_url, "Gate", {"go": str(go)})
    [waiting_id] = push(database_url, "Record", None)
    worker = spawn("--sleep=0.1")

    wait_until(lambda: runs(app, "start"), 15, "the job started")
    asked = restart(app, database_url)
    time.sleep(2)
    go.touch()
    code = worker.wait(timeout=15)

    assert asked.returncode == 0, asked.stderr
    assert code == 0, worker.log
    assert [(r["id"], r["event"]) for r in runs(app)] == [
        (gate_id, "start"),
        (gate_id, "end"),
    ], "the worker took another job after queue restart"
    assert [row["id"] for row in table(engine, "jobs")] == [waiting_id]


# -- the database drops the worker's connections ------------------------------


@pytest.mark.slow
@pytest.mark.databases("postgresql", "mysql")
def test_a_worker_outlives_its_database_connections(
    app: Path,
    database_url: str,
    database_name: str,
    engine: sa.Engine,
    spawn: Spawn,
) -> None:
    """The server closes an idle worker's connections (the database
    restarted, a proxy or an administrator cut them): the worker logs a
    warning, keeps running, and runs a job pushed afterwards.

    With ``--sleep=1`` the first statement after the cut is always the
    heartbeat, which must not hide the trouble."""
    tag = f"conveyor_worker_{os.getpid()}"
    url = tagged_url(database_url, database_name, tag)
    push(database_url, "Record", None)  # creates the tables
    worker = spawn("--sleep=1", "--log-format=json", url=url)
    wait_until(lambda: runs(app, "run"), 15, "the first job ran")
    time.sleep(1.5)  # half-way through an idle --sleep, not as it ends

    killed = drop_worker_connections(engine, database_name, tag)
    time.sleep(2)
    [job_id] = push(database_url, "Record", None)
    ran = wait_until(
        lambda: [r for r in runs(app, "run") if r["id"] == job_id],
        20,
        "the job pushed after the connections were cut ran",
    )
    alive = worker.process.poll() is None
    worker.signal(signal.SIGTERM)
    code = worker.wait(timeout=10)

    assert killed >= 1
    assert ran and alive, worker.log
    assert code == 0, worker.log
    events = [json.loads(line) for line in worker.log.splitlines() if line[:1] == "{"]
    assert "warning" in [event["level"] for event in events], worker.log


# -- memory --------------------------------------------------------------------


def test_memory_limit_stops_the_worker_between_jobs(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """``--memory=200``: a job that keeps 256 MB alive in its process
    finishes, then the worker stops (exit 0, saying why) and leaves the next
    job waiting for a fresh worker."""
    (app / "jobs" / "hog.py").write_text(
        "from conveyor import Job\n"
        "KEPT = []\n\n"
        "class Hog(Job):\n"
        "    def handle(self, data):\n"
        "        KEPT.append(bytearray(256 * 2**20))\n"
    )
    [hog_id] = push(database_url, "Hog", None)
    [next_id] = push(database_url, "Record", "later")
    worker = spawn("--memory=200", "--sleep=0.1")

    assert worker.wait(timeout=30) == 0, worker.log
    assert "--memory=200 MB passed" in worker.log
    assert f"DONE     Hog #{hog_id}" in worker.log
    [left] = table(engine, "jobs")
    assert (left["id"], left["attempts"], left["reserved_at"]) == (next_id, 0, None)
    assert runs(app) == []

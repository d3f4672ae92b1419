"""``queue workers`` and ``--max-time`` against real worker processes: what
an operator sees of a running worker, and a worker that stops on its own
after a set time (for process managers that restart workers periodically).
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import sqlalchemy as sa

from helpers import (
    Spawn,
    create_tables,
    push,
    queue_cli,
    runs,
    wait_for_workers,
    wait_until,
)


def test_queue_workers_shows_a_running_worker_and_its_current_job(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """While a worker runs a job, ``queue workers`` names its host, pid,
    queues and, from its next heartbeat on (about a second), that job; once
    the worker has stopped, it is no longer listed."""
    create_tables(database_url)
    [job_id] = push(database_url, "Sleep", {"seconds": 6})
    worker = spawn("--queue=default,mail", "--sleep=0.1")
    wait_until(lambda: runs(app, "start"), 20, "the Sleep job has started")

    def worker_line() -> str | None:
        listing = queue_cli(app, database_url, "workers")
        assert listing.exit_code == 0, listing.output
        lines = listing.stdout.splitlines()
        return next((row for row in lines if f"#{job_id}" in row), None)

    line = wait_until(worker_line, 4, f"queue workers shows job #{job_id}", 0.2)

    assert str(worker.pid) in line
    assert socket.gethostname() in line
    assert "default,mail" in line

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.log
    assert [run["id"] for run in runs(app, "end")] == [job_id]
    after = queue_cli(app, database_url, "workers")
    assert after.stdout.strip() == "No workers running.", after.output


def test_max_time_stops_an_idle_worker_after_that_many_seconds(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """``--max-time=2``: the worker runs what is there, keeps waiting for
    more, and exits 0 on its own once two seconds have passed."""
    create_tables(database_url)
    [job_id] = push(database_url, "Record", "before")
    started = time.monotonic()
    worker = spawn("--sleep=0.2", "--max-time=2")
    wait_for_workers(engine, [worker])

    assert worker.wait(timeout=30) == 0, worker.log

    assert time.monotonic() - started >= 2
    assert "--max-time=2 reached" in worker.log
    assert [(run["id"], run["data"]) for run in runs(app, "run")] == [
        (job_id, "before")
    ]

"""Case Q03: a job stuck "reserved" forever after its worker dies.

A worker is killed (``kill -9``, a pod restart) while it holds a job, and a
new worker starts on the same host. Within about the lease
(``[queue] retry_after``, which outlives ``--timeout``) plus a small grace
the job is available again and the new worker runs it as attempt 2, or
moves it to ``failed_jobs`` when its tries are used up (when the dead
worker's row is gone, nothing says the job was running rather than claimed
ahead: it runs again alone, as the same attempt; see
``conveyor.drivers.recovery``). ``queue status``
shows it running, then expired, never reserved indefinitely. Recovery works
from ``reserved_at`` alone: it needs neither the dead worker's row in
``job_workers`` (pruned here) nor a worker of the same name. In the variant,
the worker stays alive but the database drops its connection just before
the job's final delete: the delete fails once, is retried on a new
connection, and the job is deleted, and recorded as run, exactly once.

Releasing a dead worker's jobs early, from its stopped heartbeat, is tested
in ``tests/integration/test_reliability.py``; here the heartbeat limit
(30 s) is far above the 3 s lease, so only the lease can bring a job back.
The case's 300 s job and ``--timeout=30`` are scaled down to seconds."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor.db import connect
from helpers import (
    Spawn,
    count,
    drop_worker_connections,
    gone,
    push,
    queue_cli,
    runs,
    set_retry_after,
    table,
    tagged_url,
    wait_until,
)


def status_counts(app: Path, database_url: str) -> dict[str, tuple[int, ...]]:
    """``queue status --json`` per queue: ready, delayed, running, expired
    and failed."""
    result = queue_cli(app, database_url, "status", "--json")
    assert result.exit_code == 0, result.output
    return {
        entry["queue"]: tuple(
            entry[key] for key in ("ready", "delayed", "running", "expired", "failed")
        )
        for entry in json.loads(result.stdout)["queues"]
    }


@pytest.mark.slow
def test_a_job_of_a_killed_worker_runs_again_once_its_lease_runs_out(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Case Q03: SIGKILL to a worker's group mid-job takes its job process
    down too; a second worker runs the job again, as attempt 2, once
    ``retry_after`` (3 s) has passed since the reservation and not before.

    The job is reserved late in a second (a first job, ``Until``, keeps the
    worker busy until then) so that a lease counted in whole seconds, which
    could run out up to a second early, shows."""
    set_retry_after(app, 3)
    push(database_url, "Until", {"fraction": 0.7})
    [job_id] = push(database_url, "Sleep", {"seconds": [30, 0]})
    first = spawn("--timeout=2", "--tries=3", "--sleep=0.1")

    [started] = wait_until(lambda: runs(app, "start"), 15, "attempt 1 started")
    first.signal(signal.SIGKILL)
    first.wait(timeout=5)
    wait_until(lambda: gone(started["pid"]), 5, "the job process died")

    second = spawn("--timeout=2", "--tries=3", "--sleep=0.1")
    wait_until(lambda: runs(app, "end"), 15, "attempt 2 ran")
    second.signal(signal.SIGTERM)
    assert second.wait(timeout=10) == 0, second.log

    attempts = runs(app, "start")
    assert [(r["id"], r["attempt"]) for r in attempts] == [(job_id, 1), (job_id, 2)]
    waited = attempts[1]["time"] - attempts[0]["time"]
    assert waited >= 3 - 0.05, f"handed out again {waited:.2f} s after reservation"
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0


@pytest.mark.slow
def test_a_dead_workers_job_shows_expired_without_its_worker_row_then_fails(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Worker A (``--timeout=2 --tries=1``, ``retry_after = 3``) is killed
    with its job; its ``job_workers`` row is then deleted, as a pruning
    would. Polled meanwhile, ``queue status`` shows the job running, then
    expired within the lease plus a second of the reservation, and never
    ready, delayed or failed. Worker B, started on the same host, cannot
    tell from a missing row whether A was running the job or had only
    claimed it: it runs it again as attempt 1 (not counted against the only
    try), the job times out and is failed, so ``failed_jobs`` holds it with
    the reason, ``jobs`` is empty and ``status`` shows one failed, nothing
    running."""
    set_retry_after(app, 3)
    [job_id] = push(database_url, "Sleep", {"seconds": 30})
    first = spawn("--timeout=2", "--tries=1", "--sleep=0.1")

    [started] = wait_until(lambda: runs(app, "start"), 15, "attempt 1 started")
    first.signal(signal.SIGKILL)
    first.wait(timeout=5)
    wait_until(lambda: gone(started["pid"]), 5, "the job process died")
    [held] = table(engine, "jobs")
    assert held["reserved_at"] is not None
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM job_workers"))

    seen: list[tuple[float, tuple[int, ...]]] = []

    def expired() -> bool:
        counts = status_counts(app, database_url)
        seen.append((time.time(), counts["default"]))
        return counts["default"][3] == 1

    wait_until(expired, 3 + 3, "status shows the job expired", poll=0.2)
    became_expired = seen[-1][0]
    assert {counts for _, counts in seen} <= {(0, 0, 1, 0, 0), (0, 0, 0, 1, 0)}
    assert seen[-1][1] == (0, 0, 0, 1, 0)
    assert became_expired - held["reserved_at"] < 3 + 1.5, seen

    second = spawn("--timeout=2", "--tries=1", "--sleep=0.1", "--stop-when-empty")
    assert second.wait(timeout=15) == 0, second.log

    assert [(r["id"], r["attempt"]) for r in runs(app, "start")] == [
        (job_id, 1),
        (job_id, 1),
    ]
    assert count(engine, "jobs") == 0
    [failed] = table(engine, "failed_jobs")
    assert json.loads(failed["payload"])["job"] == "Sleep"
    assert "ran longer than 2 s" in failed["exception"], failed["exception"]
    assert status_counts(app, database_url) == {"default": (0, 0, 0, 0, 1)}


def worker_connections(engine: sa.Engine, database_name: str, tag: str) -> int:
    """How many connections :func:`helpers.drop_worker_connections` would
    close now."""
    with connect(engine, read_only=True) as connection:
        if database_name == "postgresql":
            query = (
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid() "
                "AND application_name = :tag"
            )
            return int(connection.execute(sa.text(query), {"tag": tag}).scalar_one())
        query = (
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
        )
        return int(connection.execute(sa.text(query)).scalar_one())


def heartbeat_at(engine: sa.Engine) -> int:
    """The one worker's last heartbeat, in whole seconds."""
    with connect(engine, read_only=True) as connection:
        query = sa.text("SELECT heartbeat_at FROM job_workers")
        return int(connection.execute(query).scalar_one())


def log_events(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line[:1] == "{"]


@pytest.mark.slow
@pytest.mark.databases("postgresql", "mysql")
def test_a_final_delete_that_loses_its_connection_is_retried_and_lands_once(
    app: Path,
    database_url: str,
    database_name: str,
    engine: sa.Engine,
    spawn: Spawn,
) -> None:
    """The variant: while a job runs, right after the worker's heartbeat,
    the server closes the worker's connections, and the job ends at once,
    so the first statement on the dead connection is the job's final
    delete. The worker stays alive: it logs the lost connection before the
    job's DONE line, retries the delete on a new connection, and the job
    is deleted once, recorded DONE once, never failed and never lost to a
    "lease ran out" mistake; ``queue status`` shows nothing running or
    expired; the worker then runs the next job and exits 0 on SIGTERM."""
    tag = f"conveyor_q03_{os.getpid()}"
    url = tagged_url(database_url, database_name, tag)
    go = app / "go"
    [gate_id] = push(database_url, "Gate", {"go": str(go)})
    worker = spawn("--sleep=0.1", "--log-format=json", url=url)
    wait_until(lambda: runs(app, "start"), 15, "the job started")

    beat = heartbeat_at(engine)
    wait_until(lambda: heartbeat_at(engine) != beat, 5, "a heartbeat", poll=0.01)
    killed = drop_worker_connections(engine, database_name, tag)
    wait_until(
        lambda: worker_connections(engine, database_name, tag) == 0,
        5,
        "the worker's connections are closed",
        poll=0.01,
    )
    go.touch()

    wait_until(lambda: count(engine, "jobs") == 0, 20, "the job was deleted")
    assert status_counts(app, database_url) == {}
    [next_id] = push(database_url, "Record", "after")
    wait_until(lambda: runs(app, "run"), 20, "the next job ran")
    alive = worker.process.poll() is None
    worker.signal(signal.SIGTERM)
    code = worker.wait(timeout=10)

    assert killed >= 1
    assert alive and code == 0, worker.log
    assert [(r["id"], r["attempt"]) for r in runs(app, "start")] == [(gate_id, 1)]
    assert [r["id"] for r in runs(app, "run")] == [next_id]
    events = log_events(worker.log)
    done = [i for i, e in enumerate(events) if e.get("event") == "job_done"]
    assert [events[i]["job_id"] for i in done] == [gate_id, next_id], worker.log
    lost = [
        i
        for i, e in enumerate(events)
        if e.get("event") == "database_unreachable" and "trying again" in e["message"]
    ]
    assert lost and lost[0] < done[0], f"the delete never hit the cut:\n{worker.log}"
    names = {e.get("event") for e in events}
    assert not names & {"lease_lost", "outcome_not_recorded", "job_failed"}
    assert count(engine, "failed_jobs") == 0
    assert count(engine, "jobs") == 0

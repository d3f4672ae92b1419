"""Case Q10: SIGTERM while a job runs.

The first SIGTERM (or one Ctrl-C) lets the running job finish: it is
deleted, no other job is taken, and the worker exits 0. With ``--grace``
(the case's 10 s, scaled down here to 1 s, for a 30 s job instead of 120 s)
the job is stopped once the grace runs out and put back at once
(``reserved_at`` cleared, and, as the README's "Stopping" promises, the
interrupted attempt not counted against ``--tries``); a second worker that
was running meanwhile runs it once more, and no job ever ends up both
completed and in ``failed_jobs``. Until it exits, the stopping worker keeps
its heartbeat, so other workers never presume it dead."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import Spawn, count, gone, push, runs, table, wait_until


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_lets_the_running_job_finish(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn, signum: int
) -> None:
    """SIGTERM (or one Ctrl-C) while a 2 s job runs: the job finishes and is
    deleted, the next job waiting is left alone, and the worker exits with
    code 0."""
    [sleep_id] = push(database_url, "Sleep", {"seconds": 2})
    [waiting_id] = push(database_url, "Record", None)
    worker = spawn("--sleep=0.1")

    wait_until(lambda: runs(app, "start"), 15, "the job started")
    worker.signal(signum)
    code = worker.wait(timeout=10)

    assert code == 0, worker.log
    assert [(r["id"], r["event"]) for r in runs(app)] == [
        (sleep_id, "start"),
        (sleep_id, "end"),
    ]
    [left] = table(engine, "jobs")
    assert left["id"] == waiting_id
    assert left["reserved_at"] is None
    assert left["attempts"] == 0
    assert count(engine, "failed_jobs") == 0


@pytest.mark.slow
def test_when_the_grace_runs_out_the_job_is_put_back_and_runs_again_once(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Worker A (``--grace=1``) runs a job that would take 30 s; worker B is
    running meanwhile, busy with a 5 s job. SIGTERM to A: about 1 s later
    A kills the job's process, puts the job back (``reserved_at`` and the
    lease cleared, due now, ``attempts`` back to 0) and exits 0, long before
    the job could have ended. B then takes it as attempt 1 (with the default
    ``--tries=1``, a counted attempt would have failed it) and runs it to
    the end; it is not left in ``jobs`` nor in ``failed_jobs``."""
    [long_id] = push(database_url, "Sleep", {"seconds": [30, 0]})
    stopping = spawn("--grace=1", "--sleep=0.1")
    [first] = wait_until(lambda: runs(app, "start"), 15, "the long job started")
    [busy_id] = push(database_url, "Sleep", {"seconds": 5})
    other = spawn("--sleep=0.1")
    wait_until(lambda: len(runs(app, "start")) == 2, 15, "B started its job")

    stopping.signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = stopping.wait(timeout=10)
    stopped_in = time.monotonic() - signalled

    assert code == 0, stopping.log
    assert 1 <= stopped_in < 4, stopping.log
    assert gone(first["pid"])
    assert "grace=1 s ran out" in stopping.log, stopping.log
    assert runs(app, "end") == [], "B finished its 5 s job too soon to look"
    row = {r["id"]: r for r in table(engine, "jobs")}[long_id]
    assert (row["reserved_at"], row["reservation"], row["reserved_by"]) == (
        None,
        None,
        None,
    )
    assert row["attempts"] == 0
    assert row["available_at"] <= time.time()

    wait_until(lambda: len(runs(app, "end")) == 2, 20, "B ran the job put back")
    other.signal(signal.SIGTERM)
    assert other.wait(timeout=10) == 0, other.log

    starts = runs(app, "start")
    assert [(r["id"], r["attempt"]) for r in starts] == [
        (long_id, 1),
        (busy_id, 1),
        (long_id, 1),
    ]
    assert starts[2]["pid"] == starts[1]["pid"], "B's job process ran it again"
    assert sorted(r["id"] for r in runs(app, "end")) == sorted([busy_id, long_id])
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0


@pytest.mark.slow
def test_a_stopping_worker_keeps_its_heartbeat_until_it_exits(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """SIGTERM (no ``--grace``) once a 5 s job has started and a heartbeat
    has named it (within a second): while the job
    finishes, the worker's ``job_workers`` row stays, names the job, and its
    ``heartbeat_at`` keeps advancing, never more than 2 s behind the clock
    (``heartbeat_timeout`` cannot be set below 5 s), so no other worker
    could presume it dead; the job finishes once, and the row goes only
    after it, as the worker exits 0."""
    [job_id] = push(database_url, "Sleep", {"seconds": 5})
    worker = spawn("--sleep=0.1")
    wait_until(lambda: runs(app, "start"), 15, "the job started")
    wait_until(
        lambda: (
            [row["current_job"] for row in table(engine, "job_workers")] == [job_id]
        ),
        5,
        "a heartbeat named the job",
    )

    worker.signal(signal.SIGTERM)
    signalled = time.time()
    seen = []
    while worker.process.poll() is None:
        # The table first: if the job has still not ended after it was
        # read, it was read while the job ran.
        workers = table(engine, "job_workers")
        now = time.time()
        if runs(app, "end"):
            break  # the job is done: deregistering is the worker's last step
        assert len(workers) == 1, f"its row went while its job ran: {workers}"
        [row] = workers
        assert row["current_job"] == job_id, row
        assert now - row["heartbeat_at"] <= 2, (now, row, worker.log)
        seen.append(row["heartbeat_at"])
        time.sleep(0.1)

    assert worker.wait(timeout=5) == 0, worker.log
    assert [(r["id"], r["event"]) for r in runs(app)] == [
        (job_id, "start"),
        (job_id, "end"),
    ]
    assert runs(app, "end")[0]["time"] - signalled >= 3, "the job did not run on"
    beats = sorted(set(seen))
    assert len(beats) >= 3 and beats[-1] - beats[0] >= 2, beats
    assert beats[-1] >= int(runs(app, "end")[0]["time"]) - 1, beats
    assert table(engine, "job_workers") == []
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0

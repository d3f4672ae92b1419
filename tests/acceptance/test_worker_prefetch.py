"""A worker claims jobs ahead (``--prefetch``), as an operator runs it: the
jobs it has not started go back at once when it stops; and an idle worker
on PostgreSQL wakes when a job is pushed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import Spawn, push, runs, table, wait_until


def test_jobs_claimed_ahead_go_back_at_once_when_the_worker_stops(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """SIGTERM while the first of six claimed jobs runs: it finishes, the
    five others were never started and are back in the queue at once, not
    reserved and with no attempt counted."""
    [sleep_id] = push(database_url, "Sleep", {"seconds": 2})
    waiting = push(database_url, "Record", *range(5))
    worker = spawn("--sleep=0.1", "--prefetch=10")

    wait_until(lambda: runs(app, "start"), 15, "the job started")
    held = [row for row in table(engine, "jobs") if row["reserved_at"] is not None]
    worker.signal(signal.SIGTERM)
    code = worker.wait(timeout=15)

    assert code == 0, worker.log
    assert len(held) == 6, "the worker claimed the waiting jobs ahead"
    assert [(r["id"], r["event"]) for r in runs(app)] == [
        (sleep_id, "start"),
        (sleep_id, "end"),
    ]
    left = table(engine, "jobs")
    assert [row["id"] for row in left] == waiting
    assert all(row["reserved_at"] is None for row in left)
    assert all(row["reserved_by"] is None for row in left)
    assert all(row["attempts"] == 0 for row in left)


def test_with_prefetch_1_only_the_running_job_is_claimed(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    push(database_url, "Sleep", {"seconds": 1})
    push(database_url, "Record", *range(3))
    worker = spawn("--sleep=0.1", "--prefetch=1", "--stop-when-empty")

    wait_until(lambda: runs(app, "start"), 15, "the job started")
    held = [row for row in table(engine, "jobs") if row["reserved_at"] is not None]

    assert worker.wait(timeout=30) == 0, worker.log
    assert len(held) == 1
    assert len(runs(app, "run")) == 3
    assert table(engine, "jobs") == []


@pytest.mark.databases("postgresql")
def test_a_push_wakes_an_idle_worker_on_postgresql(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """An idle worker with ``--sleep=120`` runs a job pushed while it waits
    long before it would poll again: the push's NOTIFY woke it."""
    worker = spawn("--sleep=120")
    wait_until(lambda: "worker started" in worker.log, 15, "the worker started")
    time.sleep(1)  # idle now, in its first long wait

    [job_id] = push(database_url, "Record", "wake up")

    wait_until(lambda: runs(app, "run"), 30, "the job ran")
    assert [r["id"] for r in runs(app, "run")] == [job_id]
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0, worker.log

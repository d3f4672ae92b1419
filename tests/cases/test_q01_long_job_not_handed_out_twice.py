"""Case Q01: a long job handed to a second worker while it still runs.

Two workers serve one queue and a job runs for a long time: it must run
once, ``attempts`` stays 1 and no ``failed_jobs`` row appears. A reserved
row is never claimed again before its lease (``[queue] retry_after``) has
run out, and the lease outlives the job's ``--timeout``: a worker whose
``--timeout`` is not below ``retry_after``, or is 0 (no limit), refuses to
start, in one line, since a job still running could otherwise be handed
out twice. (A job class's own ``timeout`` is refused the same way; see
``tests/integration/test_reliability.py``.)

The case's 100 s job, ``--timeout=120`` and 130 s wait are scaled down to
seconds, with ``retry_after`` lowered to match."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor import Queue
from helpers import (
    Spawn,
    count,
    push,
    recorded,
    rows,
    runs,
    set_retry_after,
    table,
    wait_until,
    work,
    write_jobs,
)


@pytest.mark.slow
def test_a_job_within_its_timeout_is_never_handed_to_a_second_worker(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Case Q01, scaled down: ``retry_after = 5``, ``--timeout=4``, two
    workers and a 3 s job: it runs once, attempt 1, and nothing fails."""
    set_retry_after(app, 5)
    [job_id] = push(database_url, "Sleep", {"seconds": 3})
    workers = [spawn("--timeout=4", "--sleep=0.1") for _ in range(2)]

    wait_until(lambda: runs(app, "end"), 20, "the job finished")
    time.sleep(0.2)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    codes = [worker.wait(timeout=10) for worker in workers]

    assert codes == [0, 0], [worker.log for worker in workers]
    assert [(r["id"], r["attempt"]) for r in runs(app, "start")] == [(job_id, 1)]
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0


@pytest.mark.slow
def test_a_job_reserved_late_in_a_second_is_not_handed_out_early(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Case Q01 at the edge the settings allow: ``retry_after = 3`` and
    ``--timeout=2.8``, a 2.5 s job reserved 0.85 s into a second, a second
    worker polling: the job still runs once, since its lease lasts the full
    3 s."""
    set_retry_after(app, 3)
    push(database_url, "Until", {"fraction": 0.85})
    [job_id] = push(database_url, "Sleep", {"seconds": 2.5})
    first = spawn("--timeout=2.8", "--sleep=0.1")
    wait_until(lambda: runs(app, "start"), 15, "the job started")
    second = spawn("--timeout=2.8", "--sleep=0.1")

    wait_until(lambda: runs(app, "end"), 15, "the job finished")
    time.sleep(0.3)
    for worker in (first, second):
        worker.signal(signal.SIGTERM)
    codes = [worker.wait(timeout=10) for worker in (first, second)]

    assert codes == [0, 0], [first.log, second.log]
    assert table(engine, "failed_jobs") == [], "failed while it ran and succeeded"
    starts = [(r["id"], r["attempt"]) for r in runs(app, "start")]
    assert starts == [(job_id, 1)], f"ran again while running: {starts}"
    assert "lease ran out" not in first.log
    assert count(engine, "jobs") == 0


@pytest.mark.databases("sqlite")
def test_a_worker_process_with_a_timeout_not_below_retry_after_refuses_to_start(
    app: Path, database_url: str, spawn: Spawn
) -> None:
    """``--timeout`` equal to ``retry_after`` would let a second worker take a
    job still running: the worker process refuses to start, in one line."""
    set_retry_after(app, 5)
    worker = spawn("--timeout=5")

    code = worker.wait(timeout=30)

    assert code == 1
    lines = worker.log.strip().splitlines()
    assert len(lines) == 1, worker.log
    assert lines[0].startswith("error: ")
    assert "--timeout" in lines[0]
    assert "retry_after" in lines[0]
    assert "Traceback" not in worker.log


def test_a_timeout_not_below_retry_after_is_refused(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``--timeout`` at or above retry_after (90 s by default, or as set in
    conveyor.toml), or 0, which would mean no limit at all, stops the worker
    before it takes a job: exit 1 and one error line."""
    write_jobs(tmp_path, "app")
    queue.push("Record", "untouched")

    for timeout in ["0", "90", "91.5", "600"]:
        result = work(tmp_path, database_url, "--timeout", timeout)
        assert result.exit_code == 1, (timeout, result.output)
        assert result.stderr.startswith("error: --timeout="), result.stderr
        assert "retry_after" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    (tmp_path / "conveyor.toml").write_text("[queue]\nretry_after = 20\n")
    result = work(tmp_path, database_url, "--timeout", "20")
    assert result.exit_code == 1, result.output
    assert "retry_after (20 s" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    assert recorded(tmp_path) == []
    assert len(rows(engine, "jobs")) == 1

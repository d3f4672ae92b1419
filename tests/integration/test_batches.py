"""Jobs claimed together run in one job process, in one batch, on every
database: each still gets its own outcome, its own timeout, and a job that
kills its process counts the crash alone."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from conveyor import Queue
from helpers import recorded, rows, steps, work, write_jobs

BATCH_JOBS = """
import os
import time


class Record(Job):
    def handle(self, data):
        record(self, data=data)


class Crash(Job):
    \"\"\"Ends its own process on its first attempt.\"\"\"

    def handle(self, data):
        record(self, data=data)
        if self.context.attempt == 1:
            os._exit(3)


class Slow(Job):
    timeout = 1

    def handle(self, data):
        record(self, data=data)
        time.sleep(30)
"""


def test_a_job_that_ends_its_process_mid_batch_alone_counts_the_crash(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    write_jobs(tmp_path, "app", BATCH_JOBS)
    first = queue.push("Record", {"n": 1})
    crash = queue.push("Crash", {"n": 2})
    last = queue.push("Record", {"n": 3})

    result = work(tmp_path, database_url, "--prefetch=10", "--tries=2")

    assert result.exit_code == 0, result.output
    # The job after the crash was not started by the process that died: it
    # runs once, on its first attempt, after the crashed job's retry.
    assert steps(tmp_path, "id", "attempt") == [
        (first, 1),
        (crash, 1),
        (crash, 2),
        (last, 1),
    ]
    assert rows(engine, "jobs") == []
    assert rows(engine, "failed_jobs") == []
    retried = [line for line in result.stderr.splitlines() if "RETRY" in line]
    assert len(retried) == 1, result.stderr
    assert f"Crash #{crash}" in retried[0]
    assert "exited with code 3" in retried[0]


def test_a_job_past_its_own_timeout_mid_batch_is_stopped_alone(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    write_jobs(tmp_path, "app", BATCH_JOBS)
    first = queue.push("Record", {"n": 1})
    slow = queue.push("Slow", {"n": 2})
    last = queue.push("Record", {"n": 3})

    result = work(tmp_path, database_url, "--prefetch=10")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "id", "attempt") == [(first, 1), (slow, 1), (last, 1)]
    assert rows(engine, "jobs") == []
    failed = rows(engine, "failed_jobs")
    assert len(failed) == 1
    assert "the job ran longer than 1 s" in failed[0]["exception"]
    done = [line for line in result.stderr.splitlines() if "DONE" in line]
    assert [f"Record #{first}" in done[0], f"Record #{last}" in done[1]] == [
        True,
        True,
    ]


def test_every_job_of_a_long_batch_runs_once_and_is_logged_once(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    write_jobs(tmp_path, "app", BATCH_JOBS)
    ids = queue.bulk("Record", [{"n": n} for n in range(250)])

    result = work(tmp_path, database_url, "--prefetch=100")

    assert result.exit_code == 0, result.output
    assert sorted(entry["id"] for entry in recorded(tmp_path)) == ids
    assert rows(engine, "jobs") == []
    done = [line for line in result.stderr.splitlines() if " DONE " in line]
    assert len(done) == 250
    assert result.stderr.splitlines()[-1].endswith("250 done, 0 retried, 0 failed")

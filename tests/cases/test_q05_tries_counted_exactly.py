"""Case Q05: a job runs one more time than ``--tries``.

A failing job under ``--tries=3`` must run exactly 3 times, then leave one
``failed_jobs`` row with its payload (and its traceback); ``--tries=1``
gives one run and no retry. ``--tries=0`` means no limit, as the README
and ``queue work --help`` say: a job is retried as often as it fails,
unless its class sets ``tries`` of its own; a negative value is refused."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import sqlalchemy as sa

from conveyor import Queue
from helpers import (
    failed_by_job,
    recorded,
    rows,
    run_cli,
    steps,
    work,
    write_jobs,
)


def test_tries_3_runs_a_failing_job_3_times_then_stores_its_trace(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``--tries=3`` on a job that always raises runs it exactly 3 times,
    then moves it to failed_jobs: one row with its payload, its UUID, its
    queue and the full traceback."""
    write_jobs(tmp_path, "app")
    job_id = queue.push("Boom", {"n": 1})
    [pushed] = rows(engine, "jobs")
    before = time.time()

    result = work(tmp_path, database_url, "--tries", "3")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "id", "attempt") == [(job_id, 1), (job_id, 2), (job_id, 3)]
    assert rows(engine, "jobs") == []
    [failed] = rows(engine, "failed_jobs")
    assert failed["payload"] == pushed["payload"]
    assert failed["uuid"] == json.loads(pushed["payload"])["uuid"]
    assert failed["queue"] == "default"
    assert failed["exception"].startswith("Traceback (most recent call last):")
    assert 'raise ValueError(f"boom {data}")' in failed["exception"]
    assert "ValueError: boom {'n': 1}" in failed["exception"]
    assert int(before) <= failed["failed_at"] <= math.ceil(time.time())


def test_tries_1_runs_a_failing_job_once_unless_its_class_asks_for_more(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``--tries=1`` gives a failing job exactly one run; a class with
    ``tries = 3`` gets its 3 runs all the same."""
    write_jobs(tmp_path, "app")
    write_jobs(
        tmp_path,
        "thrice",
        """
        class Thrice(Job):
            tries = 3

            def handle(self, data):
                record(self, data=data)
                raise RuntimeError("again")
        """,
    )
    queue.push("Boom", "once")
    queue.push("Thrice", "thrice")

    result = work(tmp_path, database_url, "--tries", "1")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "job", "attempt") == [
        ("Boom", 1),
        ("Thrice", 1),
        ("Thrice", 2),
        ("Thrice", 3),
    ]
    assert sorted(failed_by_job(engine)) == ["Boom", "Thrice"]
    assert rows(engine, "jobs") == []


def test_tries_0_retries_without_limit_unless_the_class_sets_one(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``--tries=0`` retries a job as often as it fails (here until it
    succeeds on its 5th attempt), while a class with ``tries = 2`` still
    stops after 2."""
    write_jobs(
        tmp_path,
        "app",
        """
        class Stubborn(Job):
            def handle(self, data):
                record(self, data=data)
                if self.context.attempt < 5:
                    raise ValueError("not yet")


        class Limited(Job):
            tries = 2

            def handle(self, data):
                record(self, data=data)
                raise ValueError("never")
        """,
    )
    queue.push("Stubborn", None)
    queue.push("Limited", None)

    result = work(tmp_path, database_url, "--tries", "0")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "job", "attempt") == [
        ("Stubborn", 1),
        ("Stubborn", 2),
        ("Stubborn", 3),
        ("Stubborn", 4),
        ("Stubborn", 5),
        ("Limited", 1),
        ("Limited", 2),
    ]
    assert list(failed_by_job(engine)) == ["Limited"]
    assert rows(engine, "jobs") == []


def test_tries_0_is_documented_as_no_limit_and_negative_tries_are_refused(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``queue work --help`` documents ``--tries`` 0 as no limit; ``--tries
    -1`` is refused before any job is taken (exit 2, naming the option)."""
    write_jobs(tmp_path, "app")
    queue.push("Record", "untouched")

    help_text = run_cli(["queue", "work", "--help"], cwd=tmp_path)
    refused = work(tmp_path, database_url, "--tries", "-1")

    assert help_text.exit_code == 0, help_text.output
    tries_help = " ".join(help_text.stdout.split("--tries", 1)[1].split()[:10])
    assert "0: no limit" in tries_help, help_text.stdout
    assert refused.exit_code == 2, refused.output
    assert "--tries" in refused.stderr
    assert recorded(tmp_path) == []
    [left] = rows(engine, "jobs")
    assert (left["attempts"], left["reserved_at"]) == (0, None)

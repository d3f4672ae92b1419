"""Case Q02: two workers claim the same row.

Many workers polling without pause read the same free job, and both run
it, when the claim is a read followed by a separate lock or update. The
claim must be one atomic step (``FOR UPDATE SKIP LOCKED`` on PostgreSQL and
MariaDB/MySQL, a write transaction on SQLite): with 500 ``Record`` jobs
and 8 workers started with ``--sleep=0``, every job runs exactly once, on
its first attempt, and once ``queue status`` shows nothing pending nothing
is left in ``jobs`` or ``failed_jobs``. (The fallback claim of servers
without SKIP LOCKED is tested in ``tests/integration/test_reliability.py``.)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import Spawn, count, push, queue_cli, runs


@pytest.mark.slow
def test_eight_workers_run_each_of_500_jobs_exactly_once(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """The case as written: ``Record {"n": i}`` for i = 1..500 and 8 workers
    with ``--sleep=0 --stop-when-empty``: all exit 0; ``queue status``
    then shows nothing ready, delayed, running or failed; each ``n`` was
    recorded exactly once, by its own job id, at ``attempt`` 1; ``jobs`` and
    ``failed_jobs`` are empty; and more than one worker took jobs, so the
    claims really did race."""
    ids = push(database_url, "Record", *({"n": n} for n in range(1, 501)))

    workers = [spawn("--sleep=0", "--stop-when-empty") for _ in range(8)]
    codes = [worker.wait(timeout=120) for worker in workers]

    assert codes == [0] * 8, [worker.log for worker in workers]
    status = queue_cli(app, database_url, "status", "--json")
    assert status.exit_code == 0, status.output
    pending = [
        entry
        for entry in json.loads(status.stdout)["queues"]
        if entry["ready"] or entry["delayed"] or entry["running"] or entry["expired"]
    ]
    assert pending == []
    done = runs(app, "run")
    by_n = Counter(r["data"]["n"] for r in done)
    assert sorted(by_n) == list(range(1, 501))
    assert set(by_n.values()) == {1}, [n for n, times in by_n.items() if times > 1]
    assert sorted(r["id"] for r in done) == sorted(ids)
    assert [r["data"]["n"] for r in sorted(done, key=lambda r: r["id"])] == list(
        range(1, 501)
    )
    assert {r["attempt"] for r in done} == {1}
    assert len({r["pid"] for r in done}) > 1, "one worker took every job"
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0

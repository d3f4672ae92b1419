"""``queue status`` counts every state exactly, on tables of this version and
of earlier ones, and run-out leases are found through the claim index."""

from __future__ import annotations

import json
import time
from pathlib import Path

import sqlalchemy as sa

from conveyor import Queue
from conveyor.config import QueueSettings
from conveyor.drivers.database import DatabaseStore
from conveyor.drivers.recovery import expired_rows
from conveyor.drivers.tables import queue_tables
from conveyor.queue.inspection import QueueCounts, queue_counts
from helpers import run_cli


def lease_taken(store: DatabaseStore, ids: list[int], seconds_ago: int) -> None:
    """Make the leases of ``ids`` as old as if taken ``seconds_ago``."""
    jobs = store.tables.jobs
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_(ids))
            .values(reserved_at=store.now() - seconds_ago)
        )


def fill(queue: Queue, engine: sa.Engine) -> None:
    """Queue ``a``: 200 ready, 50 delayed, 30 running, 20 whose lease ran
    out; ``b``: 40 ready for 500 s, 10 delayed; ``c``: 2 failed jobs only."""
    store = queue.store
    queue.bulk("Noop", [{"n": n} for n in range(250)], "a")
    gone = store.reserve_many("a", "gone", 20)
    lease_taken(store, [job.id for job in gone], 200)
    assert len(store.reserve_many("a", "alive", 30)) == 30
    for _ in range(50):
        queue.later(3600, "Noop", {}, queue="a")

    waiting = queue.bulk("Noop", [{} for _ in range(40)], "b")
    jobs = store.tables.jobs
    with engine.begin() as connection:
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_(waiting))
            .values(available_at=store.now() - 500)
        )
    for _ in range(10):
        queue.later(600, "Noop", {}, queue="b")

    queue.bulk("Noop", [{}, {}], "c")
    for job in store.reserve_many("c", "", 2):
        assert store.fail(job, "ValueError: boom", "")


EXPECTED = {
    "a": (200, 50, 30, 20, 0),
    "b": (40, 10, 0, 0, 0),
    "c": (0, 0, 0, 0, 2),
}


def shown(counts: list[QueueCounts]) -> dict[str, tuple[int, ...]]:
    return {
        c.queue: (c.ready, c.delayed, c.running, c.expired, c.failed) for c in counts
    }


def test_status_counts_every_state_of_every_queue(
    queue: Queue, engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    fill(queue, engine)

    counts = queue_counts(queue.store)

    assert shown(counts) == EXPECTED
    ages = {c.queue: c.oldest_ready_age for c in counts}
    assert ages["a"] is not None and 0 <= ages["a"] <= 5
    assert ages["b"] is not None and 500 <= ages["b"] <= 505
    assert ages["c"] is None

    result = run_cli(
        ["queue", "status", "--json"], cwd=tmp_path, database_url=database_url
    )
    assert result.exit_code == 0, result.output
    from_cli = json.loads(result.stdout)["queues"]
    assert {q["queue"]: q["ready"] for q in from_cli} == {"a": 200, "b": 40, "c": 0}
    assert [q["expired"] for q in from_cli] == [20, 0, 0]


def test_status_of_an_empty_table(queue: Queue) -> None:
    assert queue_counts(queue.store) == []


def old_tables(engine: sa.Engine) -> sa.Table:
    """The jobs table as versions before the claim index made it, with two
    jobs in it."""
    tables = queue_tables(QueueSettings())
    jobs = tables.jobs
    for index in list(jobs.indexes):
        if index.name == "ix_jobs_claim":
            jobs.indexes.discard(index)
    sa.Index("ix_jobs_queue", jobs.c.queue, jobs.c.reserved_at, jobs.c.id)
    tables.metadata.create_all(engine)
    now = int(time.time())
    with engine.begin() as connection:
        connection.execute(
            sa.insert(jobs),
            [
                {
                    "queue": "default",
                    "payload": f'{{"uuid": "u{n}", "job": "Noop", "data": {{}}}}',
                    "attempts": 0,
                    "available_at": now,
                    "created_at": now,
                    "crashes": 0,
                }
                for n in range(2)
            ],
        )
    return jobs


def test_a_jobs_table_of_an_earlier_version_gets_the_claim_index(
    engine: sa.Engine, database_url: str
) -> None:
    old_tables(engine)

    queue = Queue(database_url)
    try:
        queue.push("Noop", {})
        indexes = {
            index["name"]: index["column_names"]
            for index in sa.inspect(engine).get_indexes("jobs")
        }
        assert indexes["ix_jobs_claim"] == [
            "queue",
            "reserved_at",
            "id",
            "available_at",
        ]
        assert "ix_jobs_queue" not in indexes
        assert shown(queue_counts(queue.store)) == {"default": (3, 0, 0, 0, 0)}
        taken = queue.store.reserve_many("default", "w", 10)
        assert [job.id for job in taken] == [1, 2, 3]
    finally:
        queue.close()

    # A second process finds nothing left to do.
    again = Queue(database_url)
    try:
        again.store.ensure_tables()
        assert shown(queue_counts(again.store)) == {"default": (0, 0, 3, 0, 0)}
    finally:
        again.close()


def test_run_out_leases_are_read_in_the_claim_index_order(queue: Queue) -> None:
    newer, older = queue.bulk("Noop", [{}, {}])
    store = queue.store
    assert [job.id for job in store.reserve_many("default", "x", 2)] == [
        newer,
        older,
    ]
    lease_taken(store, [newer], 200)
    lease_taken(store, [older], 300)
    if store.family == "sqlite":
        # A range of the claim index, never a walk of the table in id order
        # (80 ms at 1,000,000 jobs; the other planners cost a tiny table
        # differently, so only SQLite's plan says something here).
        search = expired_rows(store.tables.jobs, "default", store.now())
        compiled = search.compile(store.engine)
        with store.engine.connect() as connection:
            # Statistics as of 1,000,000 jobs in one queue, under which
            # SQLite chose to walk the table in id order.
            connection.exec_driver_sql("ANALYZE")
            connection.exec_driver_sql("DELETE FROM sqlite_stat1")
            connection.exec_driver_sql(
                "INSERT INTO sqlite_stat1 VALUES ('jobs', 'ix_jobs_claim', "
                "'1000000 1000000 1000000 1 1'), ('jobs', NULL, '1000000')"
            )
            connection.exec_driver_sql("ANALYZE sqlite_schema")
            plan = " ".join(
                str(row[-1])
                for row in connection.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params.values())
                )
            )
        assert "ix_jobs_claim" in plan and "SCAN" not in plan, plan

    fresh = DatabaseStore(store.engine, store.tables, retry_after=store.retry_after)
    taken = fresh.reserve_many("default", "z", 2)

    # Worker "x" has no row naming a running job: both come back uncounted,
    # as suspects (see drivers/recovery.py), and are claimed in id order.
    assert [(job.id, job.attempts, job.crashes) for job in taken] == [
        (newer, 1, 0),
        (older, 1, 0),
    ]
    assert all(job.suspect for job in taken)

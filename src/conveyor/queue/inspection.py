"""What ``queue status`` and ``queue workers`` show, read in a few queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from conveyor.drivers.database import DatabaseStore


@dataclass(frozen=True)
class QueueCounts:
    queue: str
    ready: int = 0
    delayed: int = 0
    running: int = 0
    #: Reserved longer than retry_after: its worker is presumed dead and the
    #: job will be handed out again.
    expired: int = 0
    failed: int = 0
    #: Seconds the oldest ready job has waited.
    oldest_ready_age: int | None = None


@dataclass(frozen=True)
class WorkerRow:
    id: str
    host: str
    pid: int
    queues: str
    started_at: int
    heartbeat_at: int
    current_job: int | None
    stop_requested: bool


def queue_counts(store: DatabaseStore) -> list[QueueCounts]:
    store.ensure_tables()
    failed = store.tables.failed
    now = store.now()
    failed_by_queue = sa.select(failed.c.queue, sa.func.count()).group_by(
        failed.c.queue
    )

    counts: dict[str, dict[str, int | None]] = {}
    with store.engine.connect() as connection:
        for queue, kind, count, oldest in connection.execute(
            counts_statement(store, now)
        ):
            entry = counts.setdefault(queue, {})
            entry[kind] = count
            if kind == "ready":
                entry["oldest_ready_age"] = max(now - int(oldest), 0)
        for queue, count in connection.execute(failed_by_queue):
            counts.setdefault(queue, {})["failed"] = count
    return [
        QueueCounts(queue, **values)  # type: ignore[arg-type]
        for queue, values in sorted(counts.items())
    ]


def counts_statement(store: DatabaseStore, now: int) -> sa.Select[Any]:
    """Rows of (queue, state, count, earliest due time) for the jobs table."""
    jobs = store.tables.jobs
    expired_before = now - store.retry_after
    state = sa.case(
        (
            sa.and_(
                jobs.c.reserved_at.is_not(None), jobs.c.reserved_at < expired_before
            ),
            "expired",
        ),
        (jobs.c.reserved_at.is_not(None), "running"),
        (jobs.c.available_at > now, "delayed"),
        else_="ready",
    ).label("state")
    return sa.select(
        jobs.c.queue, state, sa.func.count(), sa.func.min(jobs.c.available_at)
    ).group_by(jobs.c.queue, state)


def workers(store: DatabaseStore) -> list[WorkerRow]:
    store.ensure_tables()
    table = store.tables.workers
    query = sa.select(
        table.c.id,
        table.c.host,
        table.c.pid,
        table.c.queues,
        table.c.started_at,
        table.c.heartbeat_at,
        table.c.current_job,
        table.c.stop_requested,
    ).order_by(table.c.started_at)
    with store.engine.connect() as connection:
        return [WorkerRow(*row) for row in connection.execute(query)]


def clear(store: DatabaseStore, queue: str | None = None) -> int:
    """Delete the jobs of ``queue`` (or of every queue) that no worker holds;
    how many."""
    store.ensure_tables()
    jobs = store.tables.jobs
    statement = sa.delete(jobs).where(jobs.c.reserved_at.is_(None))
    if queue is not None:
        statement = statement.where(jobs.c.queue == queue)
    with store.engine.begin() as connection:
        return int(connection.execute(statement).rowcount)

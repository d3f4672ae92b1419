"""What ``queue status`` and ``queue workers`` show, read in a few queries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor.db import connect
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
    """Each queue's jobs by state, read from one snapshot.

    Per queue, one range of the claim index for the jobs held and one for
    those waiting, rather than one grouped pass over the whole table: the
    index holds every column they test, so the rows themselves are never
    read (see docs/performance.md).
    """
    store.ensure_tables()
    failed = store.tables.failed
    now = store.now()
    failed_by_queue = sa.select(failed.c.queue, sa.func.count()).group_by(
        failed.c.queue
    )

    counts: dict[str, QueueCounts] = {}
    with _snapshot(store) as connection:
        for queue in queues_with_jobs(connection, store.tables.jobs):
            held = connection.execute(held_statement(store, queue, now)).one()
            waiting = connection.execute(waiting_statement(store, queue, now)).one()
            counts[queue] = _counts(queue, held, waiting, now)
        for queue, count in connection.execute(failed_by_queue):
            found = counts.get(queue, QueueCounts(queue))
            counts[queue] = replace(found, failed=count)
    return [counts[queue] for queue in sorted(counts)]


def queues_with_jobs(connection: Connection, jobs: sa.Table) -> list[str]:
    """The queues that hold a job, one index seek each: the next name after
    the last one found (a scan for distinct names would read every entry)."""
    found: list[str] = []
    while True:
        query = sa.select(jobs.c.queue).order_by(jobs.c.queue).limit(1)
        if found:
            query = query.where(jobs.c.queue > found[-1])
        name = connection.execute(query).scalar()
        if name is None:
            return found
        found.append(name)


def held_statement(store: DatabaseStore, queue: str, now: int) -> sa.Select[int, Any]:
    """How many jobs of ``queue`` workers hold, and how many of those have
    leases that ran out."""
    jobs = store.tables.jobs
    expired = sa.case((jobs.c.reserved_at < now - store.retry_after, 1), else_=0)
    return sa.select(sa.func.count(), sa.func.sum(expired)).where(
        jobs.c.queue == queue, jobs.c.reserved_at.is_not(None)
    )


def waiting_statement(
    store: DatabaseStore, queue: str, now: int
) -> sa.Select[int, Any, Any]:
    """How many jobs of ``queue`` wait, how many of those are not due yet,
    and the earliest due time of the rest."""
    jobs = store.tables.jobs
    delayed = sa.case((jobs.c.available_at > now, 1), else_=0)
    ready_since = sa.case((jobs.c.available_at <= now, jobs.c.available_at))
    return sa.select(
        sa.func.count(), sa.func.sum(delayed), sa.func.min(ready_since)
    ).where(jobs.c.queue == queue, jobs.c.reserved_at.is_(None))


def _counts(queue: str, held: Any, waiting: Any, now: int) -> QueueCounts:
    # SUM over no rows is NULL, and MySQL's SUM is a Decimal.
    expired = int(held[1] or 0)
    delayed = int(waiting[1] or 0)
    return QueueCounts(
        queue,
        ready=waiting[0] - delayed,
        delayed=delayed,
        running=held[0] - expired,
        expired=expired,
        oldest_ready_age=None if waiting[2] is None else max(now - waiting[2], 0),
    )


@contextmanager
def _snapshot(store: DatabaseStore) -> Iterator[Connection]:
    """A connection whose reads all see the same moment, so a job that
    moves between them is counted once; it never waits for a writer."""
    with connect(store.engine, read_only=True) as connection:
        if store.family != "sqlite":
            # Autocommit would read each statement at a moment of its own.
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            yield connection


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

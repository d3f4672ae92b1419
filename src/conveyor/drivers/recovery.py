"""Bringing back the jobs of a worker that died, counting only what ran.

A claim counts each job's attempt at once, whether it runs now or waits its
turn behind the others a worker claimed ahead (``--prefetch``). When the
worker dies holding them (SIGKILL, out of memory, host lost), most of them
never ran, or ran and finished before their group delete: only the job it
was running, if any, may have killed it. So when its jobs come back, by its
silent heartbeat (``release_dead_workers``) or by leases that ran out
(``release_expired``), each job is put in one of three kinds, from the
worker's row in ``job_workers``:

- **charged**: the job the row's ``current_job`` names. It keeps its
  attempt and counts a crash, and runs alone next time (see *suspect*).
- **cleared**: the other jobs of the same claim. The worker writes
  ``current_job`` only while no other job can start without its say (see
  ``conveyor.worker.presence``), and runs a claim's jobs in id order: those
  before the named one ran and finished, those after it never started. Their
  attempt is taken back; no crash.
- **suspect**: every job when ``current_job`` names none of them (the worker
  was between jobs, ran fast ones it had not named, or its row is gone). One
  of them may have been running: its attempt is taken back and no crash
  counted, but it is marked, and the next worker to claim it runs it alone
  with ``current_job`` written first. If it kills that worker too, that
  death is charged to it exactly, so a job that kills every worker still
  reaches ``[queue] max_crashes`` (one death later than when named at once)
  and is failed, never looping.

The mark is ``reserved_by`` on a row that is not reserved: that column names
the holder while ``reserved_at`` is set, and is otherwise empty but for this
mark. It needs no new column, so tables made by earlier versions serve as
they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor.drivers.tables import QueueTables

#: ``reserved_by`` of a job that is not reserved and may have been running
#: when its worker died (never a worker id: those are 32 hex digits).
SUSPECT = "suspect"


@dataclass(frozen=True)
class DeadWorker:
    host: str
    pid: int
    released: int


@dataclass(frozen=True)
class HeldRow:
    """A reserved row as the recovery reads it."""

    id: int
    reservation: str | None


def sort_held(
    held: Sequence[HeldRow], current_job: int | None
) -> tuple[list[int], list[int], list[int]]:
    """The ids of ``held`` as charged, cleared and suspect (see the module's
    docstring); ``current_job`` is what the dead holder's row named."""
    named = next((row for row in held if row.id == current_job), None)
    if named is None:
        return [], [], [row.id for row in held]
    cleared = [
        row.id
        for row in held
        if row.id != named.id and row.reservation == named.reservation
    ]
    suspect = [
        row.id
        for row in held
        if row.id != named.id and row.reservation != named.reservation
    ]
    return [named.id], cleared, suspect


def bring_back(
    connection: Connection,
    tables: QueueTables,
    held: Sequence[HeldRow],
    current_job: int | None,
    now: int,
) -> int:
    """Put ``held`` back in their queues, due now, counted as ``sort_held``
    says; how many rows changed."""
    jobs = tables.jobs
    charged, cleared, suspect = sort_held(held, current_job)
    free: dict[str, Any] = {
        "reserved_at": None,
        "reservation": None,
        "reserved_by": None,
        "available_at": now,
    }
    changes = (
        (charged, {**free, "reserved_by": SUSPECT, "crashes": jobs.c.crashes + 1}),
        (cleared, {**free, "attempts": jobs.c.attempts - 1}),
        (suspect, {**free, "reserved_by": SUSPECT, "attempts": jobs.c.attempts - 1}),
    )
    changed = 0
    for ids, values in changes:
        if ids:
            result = connection.execute(
                sa.update(jobs)
                .where(jobs.c.id.in_(ids), jobs.c.reserved_at.is_not(None))
                .values(values)
            )
            changed += int(result.rowcount)
    return changed


def current_job_of(
    connection: Connection, tables: QueueTables, worker_id: str | None
) -> int | None:
    """What the worker's row names as running; ``None`` when it names
    nothing or the row is gone."""
    if not worker_id:
        return None
    workers = tables.workers
    found = connection.execute(
        sa.select(workers.c.current_job).where(workers.c.id == worker_id)
    ).first()
    return None if found is None else found.current_job


def release_dead_workers(
    connection: Connection, tables: QueueTables, silent_for: int, now: int
) -> list[DeadWorker]:
    """Bring back the jobs of workers silent for more than ``silent_for``
    seconds and forget those workers."""
    jobs, workers = tables.jobs, tables.workers
    dead = connection.execute(
        sa.select(workers.c.id, workers.c.host, workers.c.pid, workers.c.current_job)
        .where(workers.c.heartbeat_at < now - silent_for)
        .with_for_update()
    ).all()
    found = []
    for worker in dead:
        # Find its jobs without locking, then update them by id: on MySQL an
        # UPDATE on the unindexed column would lock every row it scanned,
        # and claims would skip the whole table.
        held = [
            HeldRow(row.id, row.reservation)
            for row in connection.execute(
                sa.select(jobs.c.id, jobs.c.reservation).where(
                    jobs.c.reserved_by == worker.id, jobs.c.reserved_at.is_not(None)
                )
            )
        ]
        released = bring_back(connection, tables, held, worker.current_job, now)
        connection.execute(sa.delete(workers).where(workers.c.id == worker.id))
        found.append(DeadWorker(worker.host, worker.pid, released))
    return found


def release_expired(
    connection: Connection,
    tables: QueueTables,
    queue: str,
    older_than: int,
    now: int,
    *,
    skip_locked: bool,
) -> int:
    """Bring back the jobs of ``queue`` reserved before ``older_than``: their
    lease ran out before any worker saw their holder's heartbeat stop (its
    row is gone, or ``heartbeat_timeout`` is longer than ``retry_after``).
    Each holder's row, when it is still there, says what ran."""
    select = expired_rows(tables.jobs, queue, older_than)
    if connection.dialect.name != "sqlite":
        select = select.with_for_update(skip_locked=skip_locked)
    by_holder: dict[str | None, list[HeldRow]] = {}
    for row in connection.execute(select):
        by_holder.setdefault(row.reserved_by, []).append(
            HeldRow(row.id, row.reservation)
        )
    released = 0
    for holder, held in by_holder.items():
        current = current_job_of(connection, tables, holder)
        released += bring_back(connection, tables, held, current, now)
    return released


def expired_rows(jobs: sa.Table, queue: str, older_than: int) -> sa.Select[Any]:
    """The jobs of ``queue`` reserved before ``older_than``, oldest lease
    first: the claim index's own order, so SQLite never walks the whole
    table by id to find none (80 ms at 1,000,000 jobs)."""
    return (
        sa.select(jobs.c.id, jobs.c.reservation, jobs.c.reserved_by)
        .where(jobs.c.queue == queue, jobs.c.reserved_at < older_than)
        .order_by(jobs.c.reserved_at, jobs.c.id)
    )

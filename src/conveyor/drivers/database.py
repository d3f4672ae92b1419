"""Jobs stored in the application's own database, through SQLAlchemy Core.

Reserving is one atomic step on every database:

- PostgreSQL: one ``UPDATE`` whose row comes from a CTE that locks it with
  ``FOR UPDATE SKIP LOCKED ... LIMIT 1``, so the update can never touch more
  rows than were locked, and concurrent workers skip each other's rows;
- MySQL/MariaDB: ``SELECT ... FOR UPDATE SKIP LOCKED`` then an update by id
  in the same transaction (MariaDB scans the whole table for the one-statement
  form);
- SQLite: a select and an update inside one ``BEGIN IMMEDIATE`` transaction,
  which already excludes every other writer.

A reservation carries a fresh token; delete, release and fail only act on the
row while it still carries that token, so a worker whose lease ran out can
never remove a job another worker now holds.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid as uuid_module
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from conveyor.db import family_of
from conveyor.drivers.base import NewJob, ReservedJob
from conveyor.drivers.tables import QueueTables

Clock = Callable[[], float]


class DatabaseStore:
    """The job store of the ``jobs`` and ``failed_jobs`` tables."""

    def __init__(
        self,
        engine: Engine,
        tables: QueueTables,
        *,
        retry_after: int = 90,
        clock: Clock = time.time,
    ) -> None:
        self.engine = engine
        self.tables = tables
        self.retry_after = retry_after
        self.clock = clock
        self.family = family_of(engine)
        self._tables_ready = False

    def now(self) -> int:
        """The current whole second: what reservations compare due times to."""
        return int(self.clock())

    def due_in(self, delay: float) -> int:
        """The due time ``delay`` seconds from now, rounded up so a job is
        never handed out early; a zero delay is due at once."""
        if delay <= 0:
            return self.now()
        return math.ceil(self.clock() + delay)

    def ensure_tables(self) -> None:
        """Create the queue's tables if they are missing (once per process).

        Workers started together on a new database race to create them; the
        loser's error is harmless once the tables are there.
        """
        if self._tables_ready:
            return
        for attempt in range(1, 6):
            try:
                with self.engine.begin() as connection:
                    self.tables.metadata.create_all(connection, checkfirst=True)
                break
            except sa.exc.DBAPIError:
                # Another process created a table between our check and our
                # CREATE; look again once it has had time to finish.
                if attempt == 5:
                    raise
                time.sleep(0.1 * attempt)
        self._tables_ready = True

    # -- pushing -------------------------------------------------------------

    def push(self, jobs: Sequence[NewJob]) -> list[int]:
        if not jobs:
            return []
        self.ensure_tables()
        now = self.now()
        rows = [
            {
                "queue": job.queue,
                "payload": job.payload,
                "attempts": 0,
                "available_at": job.available_at,
                "created_at": now,
            }
            for job in jobs
        ]
        table = self.tables.jobs
        with self.engine.begin() as connection:
            if self.engine.dialect.insert_executemany_returning_sort_by_parameter_order:
                # One multi-row INSERT ... RETURNING, ids in the rows' order.
                result = connection.execute(
                    sa.insert(table).returning(
                        table.c.id, sort_by_parameter_order=True
                    ),
                    rows,
                )
                return [row[0] for row in result]
            return [
                inserted_id(connection.execute(sa.insert(table), row)) for row in rows
            ]

    # -- reserving -----------------------------------------------------------

    def reserve(self, queue: str) -> ReservedJob | None:
        now = self.now()
        token = secrets.token_hex(16)
        with self.engine.begin() as connection:
            if self.family == "postgresql":
                return self._reserve_in_one_statement(connection, queue, now, token)
            return self._reserve_by_id(connection, queue, now, token)

    def _claimable(self, queue: str, now: int) -> sa.ColumnElement[bool]:
        jobs = self.tables.jobs
        return sa.and_(
            jobs.c.queue == queue,
            sa.or_(
                sa.and_(jobs.c.reserved_at.is_(None), jobs.c.available_at <= now),
                # A lease that ran out: its worker died or lost touch. Strictly
                # older, since whole seconds could otherwise cut it short by
                # up to a second.
                jobs.c.reserved_at < now - self.retry_after,
            ),
        )

    def _reserve_in_one_statement(
        self, connection: Connection, queue: str, now: int, token: str
    ) -> ReservedJob | None:
        jobs = self.tables.jobs
        picked = (
            sa.select(jobs.c.id)
            .where(self._claimable(queue, now))
            .order_by(jobs.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
        statement = (
            sa.update(jobs)
            .where(jobs.c.id == picked.c.id)
            .values(reserved_at=now, reservation=token, attempts=jobs.c.attempts + 1)
            .returning(jobs.c.id, jobs.c.queue, jobs.c.payload, jobs.c.attempts)
        )
        row = connection.execute(statement).first()
        if row is None:
            return None
        return ReservedJob(row.id, row.queue, row.payload, row.attempts, token, now)

    def _reserve_by_id(
        self, connection: Connection, queue: str, now: int, token: str
    ) -> ReservedJob | None:
        jobs = self.tables.jobs
        select = (
            sa.select(jobs.c.id, jobs.c.queue, jobs.c.payload, jobs.c.attempts)
            .where(self._claimable(queue, now))
            .order_by(jobs.c.id)
            .limit(1)
        )
        if self.family == "mysql":
            select = select.with_for_update(skip_locked=True)
        row = connection.execute(select).first()
        if row is None:
            return None
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id == row.id)
            .values(reserved_at=now, reservation=token, attempts=row.attempts + 1)
        )
        return ReservedJob(row.id, row.queue, row.payload, row.attempts + 1, token, now)

    # -- finishing -----------------------------------------------------------

    def _held(self, job: ReservedJob) -> sa.ColumnElement[bool]:
        jobs = self.tables.jobs
        return sa.and_(jobs.c.id == job.id, jobs.c.reservation == job.reservation)

    def delete(self, job: ReservedJob) -> bool:
        with self.engine.begin() as connection:
            result = connection.execute(
                sa.delete(self.tables.jobs).where(self._held(job))
            )
            return result.rowcount == 1

    def release(self, job: ReservedJob, delay: int, *, count: bool = True) -> bool:
        """Make the job available again in ``delay`` seconds; with ``count``
        false the attempt it was reserved for is not counted (it was stopped
        by the worker's shutdown, not by anything the job did)."""
        jobs = self.tables.jobs
        values: dict[str, Any] = {
            "reserved_at": None,
            "reservation": None,
            "available_at": self.due_in(delay),
        }
        if not count:
            values["attempts"] = jobs.c.attempts - 1
        with self.engine.begin() as connection:
            statement = sa.update(jobs).where(self._held(job)).values(values)
            return connection.execute(statement).rowcount == 1

    def fail(self, job: ReservedJob, exception: str, uuid: str) -> bool:
        """Move the job to ``failed_jobs`` under ``uuid``, or a fresh uuid
        when that one is unusable (missing, too long, or taken by a row
        written by hand)."""
        failed = self.tables.failed
        row = {
            "queue": job.queue,
            "payload": job.payload,
            "exception": exception,
            "failed_at": self.now(),
        }
        with self.engine.begin() as connection:
            deleted = connection.execute(
                sa.delete(self.tables.jobs).where(self._held(job))
            )
            if deleted.rowcount != 1:
                return False
            if uuid and len(uuid) <= 36:
                try:
                    with connection.begin_nested():
                        connection.execute(sa.insert(failed).values(uuid=uuid, **row))
                    return True
                except sa.exc.IntegrityError:
                    pass
            connection.execute(
                sa.insert(failed).values(uuid=str(uuid_module.uuid4()), **row)
            )
            return True


def inserted_id(result: sa.CursorResult[Any]) -> int:
    """The primary key of the row an INSERT of one row created."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])

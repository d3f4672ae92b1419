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

MySQL before 8.0.1 and MariaDB before 10.6 have no ``SKIP LOCKED``: there the
select takes a plain ``FOR UPDATE``, and workers queue up behind each
other's claims instead of skipping them (slower, still one worker per job).

A reservation carries a fresh token and the id of the worker that holds it;
delete, release and fail only act on the row while it still carries that
token, so a worker whose lease ran out can never remove a job another worker
now holds. Every transaction that loses to another (a deadlock, a lock wait,
"database is locked") is run again; see ``contention``.
"""

from __future__ import annotations

import math
import os
import secrets
import time
import uuid as uuid_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from conveyor.db import family_of
from conveyor.drivers.base import NewJob, ReservedJob
from conveyor.drivers.contention import retry_contention
from conveyor.drivers.inserting import JobInserter
from conveyor.drivers.tables import QueueTables
from conveyor.exceptions import ConfigError

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
        self._inserter = JobInserter(engine, tables.jobs, self.channel)
        self._skip_locked: bool | None = None
        #: When each queue was last searched for jobs whose lease ran out.
        self._expired_looked_at: dict[str, float] = {}

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
        if self.family == "sqlite":
            require_writable_sqlite(self.engine)
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
                "crashes": 0,
            }
            for job in jobs
        ]
        return retry_contention(lambda: self._inserter.insert(rows), "push")

    @property
    def channel(self) -> str:
        """The PostgreSQL channel a push notifies (see ``worker.wakeup``)."""
        return f"{self.tables.jobs.name}_pushed"

    def dispose(self) -> None:
        """Close the pooled connections, the pushes' own included."""
        self.engine.dispose()
        self._inserter.dispose()

    # -- reserving -----------------------------------------------------------

    def reserve(self, queue: str, holder: str = "") -> ReservedJob | None:
        """Hand the oldest available job of ``queue`` to the worker
        ``holder``; a job whose lease ran out counts one crash more."""
        jobs = self.reserve_many(queue, holder, 1)
        return jobs[0] if jobs else None

    def reserve_many(self, queue: str, holder: str, limit: int) -> list[ReservedJob]:
        """Hand up to ``limit`` of the oldest available jobs of ``queue`` to
        ``holder`` in one transaction, oldest first. Each row gets its own
        lease (its id with this claim's token) and counts its attempt, as
        ``reserve`` does for one."""
        return retry_contention(
            lambda: self._reserve(queue, holder, max(limit, 1)), "claim"
        )

    def _reserve(self, queue: str, holder: str, limit: int) -> list[ReservedJob]:
        with self.engine.begin() as connection:
            return self._claim_in(connection, queue, holder, limit)

    def _claim_in(
        self, connection: Connection, queue: str, holder: str, limit: int
    ) -> list[ReservedJob]:
        now = self.now()
        lease = _Lease(secrets.token_hex(16), holder or None, now)
        claim = (
            self._reserve_in_one_statement
            if self.family == "postgresql"
            else self._reserve_by_id
        )
        for claimable in self._claim_order(queue, now):
            found = claim(connection, claimable, lease, limit)
            if found:
                return found
        return []

    def delete_and_reserve(
        self,
        done: Sequence[ReservedJob],
        queues: Sequence[str],
        holder: str,
        limit: int,
        *,
        in_doubt: bool = False,
    ) -> tuple[list[bool], list[ReservedJob]]:
        """In one transaction: delete the jobs that ran (for each, whether
        it was still held, or already gone), then claim up to ``limit`` jobs
        from the first of ``queues`` that has any, as ``reserve_many`` does.

        For a worker that holds no other job. ``in_doubt`` says an earlier
        try was cut off with its commit in doubt: its claim may have landed
        without the worker learning which jobs it got, so once the jobs that
        ran are deleted, every job still reserved by ``holder`` is put back,
        uncounted. (In the other order the jobs that ran would go back too,
        and run again.)"""

        def run() -> tuple[list[bool], list[ReservedJob]]:
            with self.engine.begin() as connection:
                held = self._delete_in(connection, done) if done else []
                if in_doubt and holder:
                    self._release_holder(connection, holder)
                for queue in queues:
                    claimed = self._claim_in(connection, queue, holder, limit)
                    if claimed:
                        return held, claimed
                return held, []

        return retry_contention(run, "claim")

    def _delete_in(
        self, connection: Connection, done: Sequence[ReservedJob]
    ) -> list[bool]:
        jobs = self.tables.jobs
        deleted = connection.execute(sa.delete(jobs).where(self._held_all(done)))
        if deleted.rowcount == len(done):
            return [True] * len(done)
        # Those still there were not ours to delete any more; those gone
        # went with this delete or with a lost commit of an earlier try.
        left = set(
            connection.execute(
                sa.select(jobs.c.id).where(jobs.c.id.in_([job.id for job in done]))
            ).scalars()
        )
        return [job.id not in left for job in done]

    def _release_holder(self, connection: Connection, holder: str) -> None:
        """Put back, uncounted, the jobs ``holder`` holds (by id, so MySQL
        locks only those rows)."""
        jobs = self.tables.jobs
        held = list(
            connection.execute(
                sa.select(jobs.c.id).where(jobs.c.reserved_by == holder)
            ).scalars()
        )
        if held:
            connection.execute(
                sa.update(jobs)
                .where(jobs.c.id.in_(held), jobs.c.reserved_by == holder)
                .values(
                    reserved_at=None,
                    reservation=None,
                    reserved_by=None,
                    attempts=jobs.c.attempts - 1,
                )
            )

    def _claim_order(self, queue: str, now: int) -> list[sa.ColumnElement[bool]]:
        """The kinds of claimable job, in the order to try them: jobs whose
        lease ran out first, but looked for at most once a second per queue
        while ready jobs keep coming (each kind has an index that finds its
        oldest row without sorting the backlog)."""
        jobs = self.tables.jobs
        ready = sa.and_(
            jobs.c.queue == queue,
            jobs.c.reserved_at.is_(None),
            jobs.c.available_at <= now,
        )
        # A lease that ran out: its worker died or lost touch. Strictly older,
        # since whole seconds could otherwise cut it short by up to a second.
        expired = sa.and_(
            jobs.c.queue == queue, jobs.c.reserved_at < now - self.retry_after
        )
        if time.monotonic() - self._expired_looked_at.get(queue, -1.0) < 1.0:
            return [ready, expired]
        self._expired_looked_at[queue] = time.monotonic()
        return [expired, ready]

    @property
    def skip_locked(self) -> bool:
        """Whether the server can skip rows other claims have locked (asks
        the server once)."""
        if self._skip_locked is None:
            with self.engine.connect():  # the dialect reads the version here
                pass
            self._skip_locked = supports_skip_locked(
                self.family,
                self.engine.dialect.server_version_info or (),
                is_mariadb=bool(getattr(self.engine.dialect, "is_mariadb", False)),
            )
        return self._skip_locked

    def server_time(self) -> float | None:
        """The database server's clock, in epoch seconds; ``None`` for
        SQLite, which has no clock of its own."""
        query = {
            "postgresql": "SELECT EXTRACT(EPOCH FROM clock_timestamp())",
            "mysql": "SELECT UNIX_TIMESTAMP(NOW(6))",
        }.get(self.family)
        if query is None:
            return None
        with self.engine.connect() as connection:
            return float(connection.exec_driver_sql(query).scalar_one())

    def _reserve_in_one_statement(
        self,
        connection: Connection,
        claimable: sa.ColumnElement[bool],
        lease: _Lease,
        limit: int,
    ) -> list[ReservedJob]:
        jobs = self.tables.jobs
        picked = (
            sa.select(jobs.c.id)
            .where(claimable)
            .order_by(jobs.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
        statement = (
            sa.update(jobs)
            .where(jobs.c.id.in_(sa.select(picked.c.id)))
            .ordered_values(*_claim_values(jobs, lease))
            .returning(
                jobs.c.id, jobs.c.queue, jobs.c.payload, jobs.c.attempts, jobs.c.crashes
            )
        )
        rows = sorted(connection.execute(statement).all(), key=lambda row: row.id)
        return [
            lease.job(row.id, row.queue, row.payload, row.attempts, row.crashes)
            for row in rows
        ]

    def _reserve_by_id(
        self,
        connection: Connection,
        claimable: sa.ColumnElement[bool],
        lease: _Lease,
        limit: int,
    ) -> list[ReservedJob]:
        jobs = self.tables.jobs
        select = (
            sa.select(
                jobs.c.id,
                jobs.c.queue,
                jobs.c.payload,
                jobs.c.attempts,
                jobs.c.crashes,
                jobs.c.reserved_at,
            )
            .where(claimable)
            .order_by(jobs.c.id)
            .limit(limit)
        )
        if self.family == "mysql":
            select = select.with_for_update(skip_locked=self.skip_locked)
        rows = connection.execute(select).all()
        if not rows:
            return []
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_([row.id for row in rows]))
            .ordered_values(*_claim_values(jobs, lease))
        )
        return [
            lease.job(
                row.id,
                row.queue,
                row.payload,
                row.attempts + 1,
                # Still reserved means its lease ran out: its worker died.
                row.crashes + (row.reserved_at is not None),
            )
            for row in rows
        ]

    # -- finishing -----------------------------------------------------------

    def _held(self, job: ReservedJob) -> sa.ColumnElement[bool]:
        jobs = self.tables.jobs
        return sa.and_(jobs.c.id == job.id, jobs.c.reservation == job.reservation)

    def delete(self, job: ReservedJob) -> bool:
        statement = sa.delete(self.tables.jobs).where(self._held(job))
        return retry_contention(lambda: self._changes_one(statement), "delete")

    def delete_many(self, done: Sequence[ReservedJob]) -> list[bool]:
        """Remove jobs that ran, in one transaction; for each, whether this
        worker still held it (and so removed it)."""
        if len(done) == 1:
            return [self.delete(done[0])]
        return retry_contention(lambda: self._delete_many(done), "delete")

    def _delete_many(self, done: Sequence[ReservedJob]) -> list[bool]:
        jobs = self.tables.jobs
        with self.engine.begin() as connection:
            deleted = connection.execute(
                sa.delete(jobs).where(self._held_all(done))
            ).rowcount
            if deleted == len(done):
                return [True] * len(done)
            # Some lease ran out meanwhile (rare): say which, one by one.
            connection.rollback()
        return [self.delete(job) for job in done]

    def release_unstarted(self, jobs: Sequence[ReservedJob]) -> int:
        """Put back at once, in one transaction, jobs this worker claimed but
        never started: their attempt is not counted. How many it still held."""
        if not jobs:
            return 0
        table = self.tables.jobs
        statement = (
            sa.update(table)
            .where(self._held_all(jobs))
            .values(
                reserved_at=None,
                reservation=None,
                reserved_by=None,
                attempts=table.c.attempts - 1,
                # The crash counted when an expired lease was claimed stays:
                # the worker that held it before did die.
            )
        )

        def run() -> int:
            with self.engine.begin() as connection:
                return int(connection.execute(statement).rowcount)

        return retry_contention(run, "release")

    def _held_all(self, held: Sequence[ReservedJob]) -> sa.ColumnElement[bool]:
        """The rows of ``held`` that still carry the leases they were given."""
        jobs = self.tables.jobs
        # One claim hands one token to all its rows: usually one group.
        by_token: dict[str, list[int]] = {}
        for job in held:
            by_token.setdefault(job.reservation, []).append(job.id)
        return sa.or_(
            *(
                sa.and_(jobs.c.reservation == token, jobs.c.id.in_(ids))
                for token, ids in by_token.items()
            )
        )

    def release(
        self, job: ReservedJob, delay: int, *, count: bool = True, crashed: bool = False
    ) -> bool:
        """Make the job available again in ``delay`` seconds; with ``count``
        false the attempt it was reserved for is not counted (it was stopped
        by the worker's shutdown, not by anything the job did); ``crashed``
        counts a death of the job's process."""
        jobs = self.tables.jobs
        values: dict[str, Any] = {
            "reserved_at": None,
            "reservation": None,
            "reserved_by": None,
            "available_at": self.due_in(delay),
        }
        if not count:
            values["attempts"] = jobs.c.attempts - 1
        if crashed:
            values["crashes"] = jobs.c.crashes + 1
        statement = sa.update(jobs).where(self._held(job)).values(values)
        return retry_contention(lambda: self._changes_one(statement), "release")

    def _changes_one(self, statement: sa.Executable) -> bool:
        with self.engine.begin() as connection:
            return bool(connection.execute(statement).rowcount == 1)

    def release_dead_workers(self, silent_for: int) -> list[DeadWorker]:
        """Release at once the jobs held by workers silent for more than
        ``silent_for`` seconds, counting a crash for each, and forget those
        workers; who they were and how many jobs each held."""
        return retry_contention(
            lambda: self._release_dead_workers(silent_for), "release dead workers"
        )

    def _release_dead_workers(self, silent_for: int) -> list[DeadWorker]:
        jobs, workers = self.tables.jobs, self.tables.workers
        now = self.now()
        with self.engine.begin() as connection:
            dead = connection.execute(
                sa.select(workers.c.id, workers.c.host, workers.c.pid)
                .where(workers.c.heartbeat_at < now - silent_for)
                .with_for_update()
            ).all()
            found = []
            for worker in dead:
                # Find its jobs without locking, then update them by id: on
                # MySQL an UPDATE on the unindexed column would lock every
                # row it scanned, and claims would skip the whole table.
                held = connection.execute(
                    sa.select(jobs.c.id).where(jobs.c.reserved_by == worker.id)
                ).scalars()
                released = connection.execute(
                    sa.update(jobs)
                    .where(jobs.c.id.in_(list(held)), jobs.c.reserved_by == worker.id)
                    .values(
                        reserved_at=None,
                        reservation=None,
                        reserved_by=None,
                        available_at=now,
                        crashes=jobs.c.crashes + 1,
                    )
                )
                connection.execute(sa.delete(workers).where(workers.c.id == worker.id))
                found.append(DeadWorker(worker.host, worker.pid, released.rowcount))
            return found

    def fail(self, job: ReservedJob, exception: str, uuid: str) -> bool:
        """Move the job to ``failed_jobs`` under ``uuid``, or a fresh uuid
        when that one is unusable (missing, too long, or taken by a row
        written by hand)."""
        row = {
            "queue": job.queue,
            "payload": job.payload,
            "exception": exception,
            "failed_at": self.now(),
        }
        return retry_contention(lambda: self._move_to_failed(job, row, uuid), "fail")

    def _move_to_failed(self, job: ReservedJob, row: dict[str, Any], uuid: str) -> bool:
        failed = self.tables.failed
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

    # -- after a lost connection: did our commit land? ----------------------
    #
    # A connection that drops while a commit is under way leaves the caller
    # not knowing whether it went through. These read the row afterwards.

    def was_deleted(self, job: ReservedJob) -> bool:
        """Whether the job's row is gone."""
        jobs = self.tables.jobs
        with self.engine.connect() as connection:
            found = connection.execute(sa.select(jobs.c.id).where(jobs.c.id == job.id))
            return found.first() is None

    def was_released(self, job: ReservedJob) -> bool:
        """Whether the job's row is back in its queue, reserved by no one."""
        jobs = self.tables.jobs
        with self.engine.connect() as connection:
            found = connection.execute(
                sa.select(jobs.c.id).where(
                    jobs.c.id == job.id, jobs.c.reservation.is_(None)
                )
            )
            return found.first() is not None

    def was_failed(self, job: ReservedJob, uuid: str) -> bool:
        """Whether the job's row is gone and, when it has a usable uuid, a
        failed_jobs row holds that uuid."""
        if not self.was_deleted(job):
            return False
        if not uuid or len(uuid) > 36:
            return True
        failed = self.tables.failed
        with self.engine.connect() as connection:
            found = connection.execute(
                sa.select(failed.c.id).where(failed.c.uuid == uuid)
            )
            return found.first() is not None


def _claim_values(jobs: sa.Table, lease: _Lease) -> list[tuple[Any, Any]]:
    """What a claim writes, in order: MySQL evaluates ``SET`` left to right
    with the new values, so the crash count must read ``reserved_at`` before
    it changes. A row still reserved has a lease that ran out: the worker
    that held it died or lost touch, one crash more."""
    return [
        (
            jobs.c.crashes,
            jobs.c.crashes + sa.case((jobs.c.reserved_at.is_(None), 0), else_=1),
        ),
        (jobs.c.attempts, jobs.c.attempts + 1),
        (jobs.c.reserved_at, lease.at),
        (jobs.c.reservation, lease.token),
        (jobs.c.reserved_by, lease.holder),
    ]


@dataclass(frozen=True)
class _Lease:
    """What one reservation writes on the row."""

    token: str
    holder: str | None
    at: int

    def job(
        self, id: int, queue: str, payload: str, attempts: int, crashes: int
    ) -> ReservedJob:
        return ReservedJob(id, queue, payload, attempts, self.token, self.at, crashes)


@dataclass(frozen=True)
class DeadWorker:
    host: str
    pid: int
    released: int


def require_writable_sqlite(engine: Engine) -> None:
    """Refuse, naming it, a SQLite file this process cannot write, before
    SQLite's own "unable to open database file" says neither which nor why."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:
        raise ConfigError(
            f"SQLite database {database} cannot be written: {exc.strerror}"
        ) from exc


def supports_skip_locked(
    family: str, version: tuple[Any, ...], *, is_mariadb: bool
) -> bool:
    """``SKIP LOCKED`` came with MySQL 8.0.1 and MariaDB 10.6."""
    if family != "mysql":
        return True
    numbers = tuple(part for part in version if isinstance(part, int))
    return numbers >= ((10, 6) if is_mariadb else (8, 0, 1))


def inserted_id(result: sa.CursorResult[Any]) -> int:
    """The primary key of the row an INSERT of one row created."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])

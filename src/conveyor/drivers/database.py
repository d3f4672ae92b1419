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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine

from conveyor.db import family_of
from conveyor.drivers.base import NewJob, ReservedJob
from conveyor.drivers.claim import (
    ClaimStatements,
    Lease,
    claim_by_id,
    claim_in_one_statement,
)
from conveyor.drivers.contention import retry_contention
from conveyor.drivers.inserting import JobInserter
from conveyor.drivers.recovery import (
    SUSPECT,
    DeadWorker,
    release_dead_workers,
    release_expired,
)
from conveyor.drivers.tables import QueueTables, upgrade_indexes
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
        jobs = tables.jobs
        self._claims = ClaimStatements(jobs)
        # PostgreSQL takes the ids as one array: one statement text whatever
        # their number, prepared by psycopg; elsewhere a list of parameters.
        ids = (
            jobs.c.id == sa.any_(sa.bindparam("ids", type_=ARRAY(jobs.c.id.type)))
            if self.family == "postgresql"
            else jobs.c.id.in_(sa.bindparam("ids", expanding=True))
        )
        self._delete_held = sa.delete(jobs).where(
            jobs.c.reservation == sa.bindparam("token"), ids
        )

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
                    upgrade_indexes(connection, self.tables.jobs)
                break
            except sa.exc.DBAPIError:
                # Another process created a table or an index (or dropped
                # one) between our check and our DDL; look again once it has
                # had time to finish.
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
        return retry_contention(lambda: self._inserter.insert(jobs, now), "push")

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
        ``holder``, counting its attempt."""
        jobs = self.reserve_many(queue, holder, 1)
        return jobs[0] if jobs else None

    def reserve_many(self, queue: str, holder: str, limit: int) -> list[ReservedJob]:
        """Hand up to ``limit`` of the oldest available jobs of ``queue`` to
        ``holder`` in one transaction, oldest first. Each row gets its own
        lease (its id with this claim's token) and counts its attempt, as
        ``reserve`` does for one. Jobs whose lease ran out are brought back
        first (see ``conveyor.drivers.recovery``)."""
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
        lease = Lease(secrets.token_hex(16), holder or None, now)

        def take() -> list[ReservedJob]:
            statements = self._claims
            if self.family == "postgresql":
                return claim_in_one_statement(
                    connection, statements, queue, lease, limit
                )
            mysql = self.family == "mysql"
            return claim_by_id(
                connection,
                statements,
                queue,
                lease,
                limit,
                lock=mysql,
                skip_locked=not mysql or self.skip_locked,
            )

        # Leases that ran out are looked for at most once a second per queue
        # while ready jobs keep coming, and whenever none is ready.
        looked = self._bring_back_expired(connection, queue, now, force=False)
        found = take()
        if not found and not looked:
            self._bring_back_expired(connection, queue, now, force=True)
            found = take()
        return found

    def delete_and_reserve(
        self,
        done: Sequence[ReservedJob],
        queues: Sequence[str],
        holder: str,
        limit: int,
        *,
        in_doubt: bool = False,
        name_current: bool = False,
        running: Sequence[ReservedJob] | None = None,
    ) -> tuple[list[bool], list[ReservedJob]]:
        """In one transaction: delete the jobs that ran (for each, whether
        it was still held, or already gone), then claim up to ``limit`` jobs
        from the first of ``queues`` that has any, as ``reserve_many`` does.

        For a worker that holds no other job. ``in_doubt`` says an earlier
        try was cut off with its commit in doubt: its claim may have landed
        without the worker learning which jobs it got, so once the jobs that
        ran are deleted, every job still reserved by ``holder`` is put back,
        uncounted. (In the other order the jobs that ran would go back too,
        and run again.)

        The holder's ``current_job`` is written in the same transaction when
        the claim hands out exactly one job (it starts next, alone), or with
        ``name_current`` (it may name a job that ran): see
        ``conveyor.drivers.recovery``.

        ``running``: the claim is made ahead, while the worker's job process
        runs these jobs. It names no job (the row's word on the running
        batch stands), and a claim in doubt puts back every job the holder
        holds but these."""

        def run() -> tuple[list[bool], list[ReservedJob]]:
            with self.engine.begin() as connection:
                held = self._delete_in(connection, done) if done else []
                if in_doubt and holder:
                    keep = [job.id for job in running or ()]
                    self._release_holder(connection, holder, keep)
                claimed: list[ReservedJob] = []
                for queue in queues:
                    claimed = self._claim_in(connection, queue, holder, limit)
                    if claimed:
                        break
                names = running is None and (
                    name_current or in_doubt or len(claimed) == 1
                )
                if holder and names:
                    current = claimed[0].id if len(claimed) == 1 else None
                    self._name_current(connection, holder, current)
                return held, claimed

        return retry_contention(run, "claim")

    def _name_current(
        self, connection: Connection, holder: str, job_id: int | None
    ) -> None:
        workers = self.tables.workers
        connection.execute(
            sa.update(workers).where(workers.c.id == holder).values(current_job=job_id)
        )

    def _delete_in(
        self, connection: Connection, done: Sequence[ReservedJob]
    ) -> list[bool]:
        jobs = self.tables.jobs
        # One claim hands one token to all its rows: usually one statement,
        # built once, its ids bound as a list.
        by_token: dict[str, list[int]] = {}
        for job in done:
            by_token.setdefault(job.reservation, []).append(job.id)
        deleted = sum(
            connection.execute(self._delete_held, {"token": token, "ids": ids}).rowcount
            for token, ids in by_token.items()
        )
        if deleted == len(done):
            return [True] * len(done)
        # Those still there were not ours to delete any more; those gone
        # went with this delete or with a lost commit of an earlier try.
        left = set(
            connection.execute(
                sa.select(jobs.c.id).where(jobs.c.id.in_([job.id for job in done]))
            ).scalars()
        )
        return [job.id not in left for job in done]

    def _release_holder(
        self, connection: Connection, holder: str, keep: Sequence[int] = ()
    ) -> None:
        """Put back, uncounted, the jobs ``holder`` holds but ``keep`` (by
        id, so MySQL locks only those rows)."""
        jobs = self.tables.jobs
        kept = set(keep)
        held = [
            job_id
            for job_id in connection.execute(
                sa.select(jobs.c.id).where(
                    jobs.c.reserved_by == holder, jobs.c.reserved_at.is_not(None)
                )
            ).scalars()
            if job_id not in kept
        ]
        if held:
            connection.execute(
                sa.update(jobs)
                .where(
                    jobs.c.id.in_(held),
                    jobs.c.reserved_by == holder,
                    jobs.c.reserved_at.is_not(None),
                )
                .values(
                    reserved_at=None,
                    reservation=None,
                    reserved_by=None,
                    attempts=jobs.c.attempts - 1,
                )
            )

    def _bring_back_expired(
        self, connection: Connection, queue: str, now: int, *, force: bool
    ) -> bool:
        """Put back the jobs of ``queue`` whose lease ran out (their worker
        died or lost touch), unless looked for less than a second ago and
        not ``force``; whether it looked."""
        last = self._expired_looked_at.get(queue, -1.0)
        if not force and time.monotonic() - last < 1.0:
            return False
        self._expired_looked_at[queue] = time.monotonic()
        # Strictly older, since whole seconds could otherwise cut a lease
        # short by up to a second.
        release_expired(
            connection,
            self.tables,
            queue,
            now - self.retry_after,
            now,
            skip_locked=self.family != "mysql" or self.skip_locked,
        )
        return True

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
        never started: their attempt is not counted, and a suspect stays one
        (it has not run since). How many it still held."""
        if not jobs:
            return 0
        table = self.tables.jobs
        groups = [
            [job for job in jobs if job.suspect],
            [job for job in jobs if not job.suspect],
        ]
        statements = [
            sa.update(table)
            .where(self._held_all(group))
            .values(
                reserved_at=None,
                reservation=None,
                reserved_by=SUSPECT if group[0].suspect else None,
                attempts=table.c.attempts - 1,
            )
            for group in groups
            if group
        ]

        def run() -> int:
            with self.engine.begin() as connection:
                return sum(
                    int(connection.execute(statement).rowcount)
                    for statement in statements
                )

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
        ``silent_for`` seconds and forget those workers; who they were and
        how many jobs each held. Only the job a worker's row names as
        running counts its attempt and a crash (see
        ``conveyor.drivers.recovery``)."""

        def run() -> list[DeadWorker]:
            with self.engine.begin() as connection:
                return release_dead_workers(
                    connection, self.tables, silent_for, self.now()
                )

        return retry_contention(run, "release dead workers")

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

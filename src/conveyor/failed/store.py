"""Reading and acting on the ``failed_jobs`` table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from conveyor.drivers.database import DatabaseStore, inserted_id
from conveyor.exceptions import QueueError
from conveyor.queue.payload import Payload


@dataclass(frozen=True)
class FailedJob:
    id: int
    uuid: str
    queue: str
    payload: str
    exception: str
    failed_at: int

    @property
    def job(self) -> str:
        try:
            return Payload.decode(self.payload).job
        except Exception:
            return "?"

    @property
    def error_line(self) -> str:
        """The last line of the trace: the exception and its message."""
        lines = [line for line in self.exception.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    @property
    def failed_at_text(self) -> str:
        moment = dt.datetime.fromtimestamp(self.failed_at, dt.timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


class FailedJobStore:
    def __init__(self, store: DatabaseStore) -> None:
        self.store = store
        self.table = store.tables.failed

    def _select(self) -> sa.Select[Any]:
        t = self.table
        return sa.select(
            t.c.id, t.c.uuid, t.c.queue, t.c.payload, t.c.exception, t.c.failed_at
        )

    def all(self, queue: str | None = None) -> list[FailedJob]:
        """Every failed job (of ``queue``, if given), oldest first."""
        self.store.ensure_tables()
        query = self._select().order_by(self.table.c.id)
        if queue is not None:
            query = query.where(self.table.c.queue == queue)
        with self.store.engine.connect() as connection:
            return [FailedJob(*row) for row in connection.execute(query)]

    def find(self, failed_id: int) -> FailedJob:
        self.store.ensure_tables()
        query = self._select().where(self.table.c.id == failed_id)
        with self.store.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            raise QueueError(f"no failed job with id {failed_id}")
        return FailedJob(*row)

    def retry(
        self, ids: Sequence[int] | None = None, queue: str | None = None
    ) -> list[int]:
        """Push failed jobs back with fresh attempts and remove them from the
        store, in one transaction; the new job ids. ``ids`` of ``None`` means
        all (of ``queue``, if given)."""
        self.store.ensure_tables()
        t, jobs = self.table, self.store.tables.jobs
        query = sa.select(t.c.id, t.c.queue, t.c.payload).order_by(t.c.id)
        if ids is not None:
            query = query.where(t.c.id.in_(list(ids)))
        if queue is not None:
            query = query.where(t.c.queue == queue)
        now = self.store.now()
        with self.store.engine.begin() as connection:
            rows = connection.execute(query).all()
            if ids is not None:
                missing = sorted(set(ids) - {row.id for row in rows})
                if missing:
                    raise QueueError(f"no failed job with id {missing[0]}")
            new_ids = []
            for row in rows:
                result = connection.execute(
                    sa.insert(jobs).values(
                        queue=row.queue,
                        payload=row.payload,
                        attempts=0,
                        available_at=now,
                        created_at=now,
                    )
                )
                new_ids.append(inserted_id(result))
                connection.execute(sa.delete(t).where(t.c.id == row.id))
            if new_ids and self.store.family == "postgresql":
                # Wakes idle workers at the commit, as a push does.
                connection.execute(sa.select(sa.func.pg_notify(self.store.channel, "")))
        return new_ids

    def forget(self, failed_id: int) -> None:
        self.store.ensure_tables()
        with self.store.engine.begin() as connection:
            result = connection.execute(
                sa.delete(self.table).where(self.table.c.id == failed_id)
            )
            if result.rowcount != 1:
                raise QueueError(f"no failed job with id {failed_id}")

    def flush(self, older_than_hours: float | None = None) -> int:
        """Delete failed jobs (only those older than the given hours, if
        given); how many."""
        self.store.ensure_tables()
        statement = sa.delete(self.table)
        if older_than_hours is not None:
            cutoff = self.store.now() - int(older_than_hours * 3600)
            statement = statement.where(self.table.c.failed_at < cutoff)
        with self.store.engine.begin() as connection:
            return int(connection.execute(statement).rowcount)

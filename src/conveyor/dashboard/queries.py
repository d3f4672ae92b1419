"""The dashboard's reads that ``queue status`` and ``queue failed`` do not
already offer: waiting and running jobs page by page, one job, the queues'
names. Every query reads only, so on SQLite it never waits for a worker's
write."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from conveyor.db import connect
from conveyor.drivers.database import DatabaseStore
from conveyor.queue.inspection import queues_with_jobs
from conveyor.queue.payload import Payload

JobState = Literal["ready", "delayed", "running"]
JOB_STATES: tuple[JobState, ...] = ("ready", "delayed", "running")
PAGE_SIZE = 50


@dataclass(frozen=True)
class JobRow:
    id: int
    queue: str
    payload: str
    attempts: int
    reserved_at: int | None
    available_at: int
    created_at: int
    state: JobState

    @property
    def job(self) -> str:
        try:
            return Payload.decode(self.payload).job
        except Exception:
            return "?"


@dataclass(frozen=True)
class JobPage:
    rows: tuple[JobRow, ...]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(math.ceil(self.total / self.page_size), 1)


def readable(payload: str) -> str:
    """A payload as indented JSON with its text unescaped (it is stored as
    ASCII), or as stored when it is not JSON."""
    try:
        return json.dumps(json.loads(payload), ensure_ascii=False, indent=2)
    except ValueError:
        return payload


def _state_of(row: Any, now: int) -> JobState:
    if row.reserved_at is not None:
        return "running"
    return "delayed" if row.available_at > now else "ready"


def _job_name_pattern(job: str) -> str:
    # Payloads are written by Payload.encode as {"uuid": ..., "job": ...,
    # "data": ...} in ASCII JSON, so the name is matched as json.dumps wrote
    # it, with LIKE's wildcards escaped.
    name = json.dumps(job, ensure_ascii=True)
    escaped = name.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f'%"job": {escaped}, "data": %'


def list_jobs(
    store: DatabaseStore,
    *,
    states: Sequence[JobState] = JOB_STATES,
    queue: str | None = None,
    job: str | None = None,
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> JobPage:
    """Jobs in ``states`` (running includes those whose lease ran out), of
    ``queue`` and job class ``job`` if given, oldest first."""
    store.ensure_tables()
    jobs = store.tables.jobs
    now = store.now()
    conditions: list[sa.ColumnElement[bool]] = []
    wanted: list[sa.ColumnElement[bool]] = []
    if "running" in states:
        wanted.append(jobs.c.reserved_at.is_not(None))
    if "ready" in states:
        wanted.append(sa.and_(jobs.c.reserved_at.is_(None), jobs.c.available_at <= now))
    if "delayed" in states:
        wanted.append(sa.and_(jobs.c.reserved_at.is_(None), jobs.c.available_at > now))
    conditions.append(sa.or_(*wanted) if wanted else sa.false())
    if queue:
        conditions.append(jobs.c.queue == queue)
    if job:
        conditions.append(jobs.c.payload.like(_job_name_pattern(job), escape="!"))

    page = max(page, 1)
    columns = (
        jobs.c.id,
        jobs.c.queue,
        jobs.c.payload,
        jobs.c.attempts,
        jobs.c.reserved_at,
        jobs.c.available_at,
        jobs.c.created_at,
    )
    query = (
        sa.select(*columns)
        .where(*conditions)
        .order_by(jobs.c.id)
        .limit(page_size)
        .offset((page - 1) * page_size)
    )
    count = sa.select(sa.func.count()).select_from(jobs).where(*conditions)
    with connect(store.engine, read_only=True) as connection:
        total = int(connection.execute(count).scalar_one())
        rows = tuple(
            JobRow(*row, state=_state_of(row, now)) for row in connection.execute(query)
        )
    return JobPage(rows, total, page, page_size)


def find_job(store: DatabaseStore, job_id: int) -> JobRow | None:
    store.ensure_tables()
    jobs = store.tables.jobs
    query = sa.select(
        jobs.c.id,
        jobs.c.queue,
        jobs.c.payload,
        jobs.c.attempts,
        jobs.c.reserved_at,
        jobs.c.available_at,
        jobs.c.created_at,
    ).where(jobs.c.id == job_id)
    with connect(store.engine, read_only=True) as connection:
        row = connection.execute(query).first()
    return None if row is None else JobRow(*row, state=_state_of(row, store.now()))


def queue_names(store: DatabaseStore) -> list[str]:
    """Every queue with a waiting, running or failed job."""
    store.ensure_tables()
    failed = store.tables.failed
    with connect(store.engine, read_only=True) as connection:
        names = set(queues_with_jobs(connection, store.tables.jobs))
        names.update(connection.execute(sa.select(failed.c.queue).distinct()).scalars())
    return sorted(names)

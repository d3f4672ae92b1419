"""The statements of a claim: which rows it takes and what it writes on
them (see ``conveyor.drivers.database`` for the locking on each database)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor.drivers.base import ReservedJob
from conveyor.drivers.recovery import SUSPECT


def claim_in_one_statement(
    connection: Connection,
    jobs: sa.Table,
    claimable: sa.ColumnElement[bool],
    lease: Lease,
    limit: int,
) -> list[ReservedJob]:
    """PostgreSQL: one ``UPDATE`` whose rows come from a CTE that locks them
    with ``FOR UPDATE SKIP LOCKED ... LIMIT``."""
    # The CTE keeps the mark each row had before the claim overwrites it.
    picked = (
        sa.select(jobs.c.id, jobs.c.reserved_by.label("mark"))
        .where(claimable)
        .order_by(jobs.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    statement = (
        sa.update(jobs)
        .where(jobs.c.id == picked.c.id)
        .ordered_values(*_claim_values(jobs, lease))
        .returning(
            jobs.c.id,
            jobs.c.queue,
            jobs.c.payload,
            jobs.c.attempts,
            jobs.c.crashes,
            picked.c.mark,
        )
    )
    rows = sorted(connection.execute(statement).all(), key=lambda row: row.id)
    return [
        lease.job(
            row.id,
            row.queue,
            row.payload,
            row.attempts,
            row.crashes,
            suspect=row.mark == SUSPECT,
        )
        for row in rows
    ]


def claim_by_id(
    connection: Connection,
    jobs: sa.Table,
    claimable: sa.ColumnElement[bool],
    lease: Lease,
    limit: int,
    *,
    lock: bool,
    skip_locked: bool,
) -> list[ReservedJob]:
    """A select (locking the rows when ``lock``), then an update by id, in
    the caller's transaction."""
    select = (
        sa.select(
            jobs.c.id,
            jobs.c.queue,
            jobs.c.payload,
            jobs.c.attempts,
            jobs.c.crashes,
            jobs.c.reserved_by,
        )
        .where(claimable)
        .order_by(jobs.c.id)
        .limit(limit)
    )
    if lock:
        select = select.with_for_update(skip_locked=skip_locked)
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
            row.crashes,
            suspect=row.reserved_by == SUSPECT,
        )
        for row in rows
    ]


def _claim_values(jobs: sa.Table, lease: Lease) -> list[tuple[Any, Any]]:
    """What a claim writes. Only ready rows are claimed: a lease that ran out
    is first brought back, and its crash counted or not, by
    ``conveyor.drivers.recovery``."""
    return [
        (jobs.c.attempts, jobs.c.attempts + 1),
        (jobs.c.reserved_at, lease.at),
        (jobs.c.reservation, lease.token),
        (jobs.c.reserved_by, lease.holder),
    ]


@dataclass(frozen=True)
class Lease:
    """What one reservation writes on the row."""

    token: str
    holder: str | None
    at: int

    def job(
        self,
        id: int,
        queue: str,
        payload: str,
        attempts: int,
        crashes: int,
        *,
        suspect: bool,
    ) -> ReservedJob:
        return ReservedJob(
            id, queue, payload, attempts, self.token, self.at, crashes, suspect
        )

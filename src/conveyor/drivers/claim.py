"""The statements of a claim: which rows it takes and what it writes on
them (see ``conveyor.drivers.database`` for the locking on each database)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor.drivers.base import ReservedJob
from conveyor.drivers.recovery import SUSPECT


class ClaimStatements:
    """The statements of a claim on one jobs table, built once: each claim
    binds its queue, time, lease and size, so SQLAlchemy neither builds nor
    looks up a statement per claim (and psycopg prepares PostgreSQL's)."""

    def __init__(self, jobs: sa.Table) -> None:
        self.jobs = jobs
        ready = sa.and_(
            jobs.c.queue == sa.bindparam("claim_queue"),
            jobs.c.reserved_at.is_(None),
            jobs.c.available_at <= sa.bindparam("claim_now"),
        )
        limit = sa.bindparam("claim_limit", type_=sa.Integer)
        # PostgreSQL: the CTE keeps the mark each row had before the claim
        # overwrites it.
        picked = (
            sa.select(jobs.c.id, jobs.c.reserved_by.label("mark"))
            .where(ready)
            .order_by(jobs.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
        self.one_statement = (
            sa.update(jobs)
            .where(jobs.c.id == picked.c.id)
            .ordered_values(*_claim_values(jobs))
            .returning(
                jobs.c.id,
                jobs.c.queue,
                jobs.c.payload,
                jobs.c.attempts,
                jobs.c.crashes,
                picked.c.mark,
            )
        )
        self.select = (
            sa.select(
                jobs.c.id,
                jobs.c.queue,
                jobs.c.payload,
                jobs.c.attempts,
                jobs.c.crashes,
                jobs.c.reserved_by,
            )
            .where(ready)
            .order_by(jobs.c.id)
            .limit(limit)
        )
        self.update_by_id = (
            sa.update(jobs)
            .where(jobs.c.id.in_(sa.bindparam("claim_ids", expanding=True)))
            .ordered_values(*_claim_values(jobs))
        )
        self._locking: dict[bool, sa.Select[Any]] = {}

    def locking_select(self, skip_locked: bool) -> sa.Select[Any]:
        if skip_locked not in self._locking:
            self._locking[skip_locked] = self.select.with_for_update(
                skip_locked=skip_locked
            )
        return self._locking[skip_locked]


def claim_in_one_statement(
    connection: Connection,
    statements: ClaimStatements,
    queue: str,
    lease: Lease,
    limit: int,
) -> list[ReservedJob]:
    """PostgreSQL: one ``UPDATE`` whose rows come from a CTE that locks them
    with ``FOR UPDATE SKIP LOCKED ... LIMIT``."""
    found = connection.execute(
        statements.one_statement, _claim_parameters(queue, lease, limit)
    )
    rows = sorted(found.all(), key=lambda row: row.id)
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
    statements: ClaimStatements,
    queue: str,
    lease: Lease,
    limit: int,
    *,
    lock: bool,
    skip_locked: bool,
) -> list[ReservedJob]:
    """A select (locking the rows when ``lock``), then an update by id, in
    the caller's transaction."""
    select = statements.locking_select(skip_locked) if lock else statements.select
    parameters = _claim_parameters(queue, lease, limit)
    rows = connection.execute(select, parameters).all()
    if not rows:
        return []
    connection.execute(
        statements.update_by_id, {**parameters, "claim_ids": [row.id for row in rows]}
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


def _claim_parameters(queue: str, lease: Lease, limit: int) -> dict[str, Any]:
    return {
        "claim_queue": queue,
        "claim_now": lease.at,
        "claim_limit": limit,
        "lease_at": lease.at,
        "lease_token": lease.token,
        "lease_holder": lease.holder,
    }


def _claim_values(jobs: sa.Table) -> list[tuple[Any, Any]]:
    """What a claim writes, its lease bound per claim. Only ready rows are
    claimed: a lease that ran out is first brought back, and its crash
    counted or not, by ``conveyor.drivers.recovery``."""
    return [
        (jobs.c.attempts, jobs.c.attempts + 1),
        (jobs.c.reserved_at, sa.bindparam("lease_at", type_=sa.Integer)),
        (jobs.c.reservation, sa.bindparam("lease_token", type_=sa.String)),
        (jobs.c.reserved_by, sa.bindparam("lease_holder", type_=sa.String)),
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

"""Jobs done and failed per minute, kept for the dashboard's chart.

A job that is done is deleted and leaves no trace, so the counts must be
written down as they happen. Each worker counts its outcomes in memory and
adds them to the ``<jobs table>_metrics`` table every few seconds, one row per
queue and minute. Rows are only ever inserted, never updated, so workers never
wait on each other's counts; readers add them up. Rows older than a day are
deleted now and then. The counts of a worker killed outright since its last
write are lost: they are a picture, not a ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from conveyor.drivers.contention import retry_contention
from conveyor.drivers.database import DatabaseStore

#: Seconds between two writes of a worker's counts.
FLUSH_EVERY = 5.0
#: Seconds of counts kept.
KEEP_SECONDS = 24 * 3600
_PRUNE_EVERY = 600.0
#: The outcomes counted, as the worker's log names them.
OUTCOMES = ("DONE", "FAILED")


@dataclass(frozen=True)
class MinuteTotals:
    #: The minute's first second, UTC epoch.
    minute: int
    done: int = 0
    failed: int = 0


def metrics_table_name(jobs_table: str) -> str:
    return f"{jobs_table}_metrics"


def metrics_table(jobs_table: str) -> sa.Table:
    """The metrics table kept beside the jobs table ``jobs_table``."""
    name = metrics_table_name(jobs_table)
    queue_name = sa.String(255).with_variant(
        mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb"
    )
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("queue", queue_name, nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Index(f"ix_{name}_minute", "minute"),
    )


def ensure_metrics_table(store: DatabaseStore, table: sa.Table) -> None:
    """Create ``table`` if it is missing; a process racing us to it is fine."""
    for attempt in range(1, 6):
        try:
            with store.engine.begin() as connection:
                table.create(connection, checkfirst=True)
            return
        except sa.exc.DBAPIError:
            if attempt == 5:
                raise
            time.sleep(0.1 * attempt)


class MinuteCounts:
    """One worker's outcomes not yet written, by minute and queue."""

    def __init__(self, store: DatabaseStore) -> None:
        self.store = store
        self.table = metrics_table(store.tables.jobs.name)
        self._pending: dict[tuple[int, str], list[int]] = {}
        self._ready = False
        self._last_flush = time.monotonic()
        self._last_prune = 0.0

    def count(self, queue: str, outcome: str) -> None:
        """Count one outcome of the worker's log (only DONE and FAILED
        count)."""
        if outcome not in OUTCOMES:
            return
        minute = self.store.now() // 60 * 60
        totals = self._pending.setdefault((minute, queue), [0, 0])
        totals[OUTCOMES.index(outcome)] += 1

    def flush(self, *, force: bool = False) -> None:
        """Write the counts, at most every :data:`FLUSH_EVERY` seconds unless
        ``force``; they are kept for the next try if the write fails."""
        if not self._pending:
            return
        if not force and time.monotonic() - self._last_flush < FLUSH_EVERY:
            return
        self._last_flush = time.monotonic()
        if not self._ready:
            ensure_metrics_table(self.store, self.table)
            self._ready = True
        rows = [
            {"minute": minute, "queue": queue, "done": done, "failed": failed}
            for (minute, queue), (done, failed) in sorted(self._pending.items())
        ]

        def write() -> None:
            with self.store.engine.begin() as connection:
                connection.execute(sa.insert(self.table), rows)

        retry_contention(write, "metrics")
        self._pending.clear()
        if time.monotonic() - self._last_prune > _PRUNE_EVERY:
            self._last_prune = time.monotonic()
            self._prune()

    def _prune(self) -> None:
        cutoff = self.store.now() - KEEP_SECONDS
        statement = sa.delete(self.table).where(self.table.c.minute < cutoff)

        def prune() -> None:
            with self.store.engine.begin() as connection:
                connection.execute(statement)

        retry_contention(prune, "metrics")


def per_minute(store: DatabaseStore, minutes: int = 60) -> list[MinuteTotals]:
    """Jobs done and failed in each of the last ``minutes`` minutes, every
    queue together, oldest first, the current minute last."""
    table = metrics_table(store.tables.jobs.name)
    ensure_metrics_table(store, table)
    current = store.now() // 60 * 60
    since = current - (minutes - 1) * 60
    done, failed = sa.func.sum(table.c.done), sa.func.sum(table.c.failed)
    query = (
        sa.select(table.c.minute, done, failed)
        .where(table.c.minute >= since)
        .group_by(table.c.minute)
    )
    with store.engine.connect() as connection:
        found = {
            int(minute): MinuteTotals(int(minute), int(done), int(failed))
            for minute, done, failed in connection.execute(query)
        }
    return [
        found.get(start, MinuteTotals(start)) for start in range(since, current + 1, 60)
    ]

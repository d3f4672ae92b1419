"""Inserting pushed jobs in as few round trips as each database allows.

A push is one multi-row ``INSERT ... RETURNING id`` per ``ROWS_PER_STATEMENT``
jobs (one for a single push), which SQLAlchemy compiles once per size and
the pool's driver connection runs (see ``driver_sql``: SQLAlchemy's
execution would cost a third of the push).

- A push that fits in one statement runs in autocommit on PostgreSQL and
  MySQL/MariaDB: one statement is already all-or-nothing, and ``BEGIN`` and
  ``COMMIT`` around it would be two more round trips. Those pushes use an
  engine of their own, opened in autocommit once per connection, since
  switching a pooled connection to autocommit and back costs round trips
  too. A larger bulk runs its statements in one transaction; on SQLite
  every push is a ``BEGIN IMMEDIATE`` transaction.
- The ids come back sorted, which is the jobs' order: each row takes its id
  from the sequence (PostgreSQL), the auto-increment counter (MariaDB) or
  ``AUTOINCREMENT`` (SQLite) as it is inserted, the rows of a ``VALUES``
  list are inserted in their order (what Django's ``bulk_create`` relies on
  too), later statements of the transaction take later ids, and no counter
  ever goes back; whatever order ``RETURNING`` lists them in.
- A single push on MySQL/MariaDB reads its id from the server's reply
  instead (the driver's ``lastrowid``), which spares the server a result
  set; MySQL, which has no ``RETURNING``, pushes a bulk that way too, one
  ``INSERT`` per job in one transaction.

On PostgreSQL the statement also calls ``pg_notify`` for every row it
returns, which wakes idle workers (``worker.wakeup``) once the jobs are
committed and visible, without a statement of its own; identical
notifications of one transaction are delivered once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from conveyor.db import create_engine, family_of
from conveyor.drivers.base import NewJob
from conveyor.drivers.driver_sql import DriverStatement, run_statements

#: The largest bulk pushed as one statement, well under every database's
#: limit on parameters.
ROWS_PER_STATEMENT = 1000
#: How many sizes of statement stay compiled (a bulk's size is the caller's).
SIZES_KEPT = 32
#: The columns a push writes, in the order of the table.
COLUMNS = ("queue", "payload", "attempts", "available_at", "created_at", "crashes")


class JobInserter:
    """Inserts jobs into the jobs table; their ids, in the jobs' order."""

    def __init__(self, engine: Engine, table: sa.Table, channel: str) -> None:
        self.engine = engine
        self.table = table
        self.family = family_of(engine)
        self._autocommit: Engine | None = None
        self._returned: list[Any] = [table.c.id]
        if self.family == "postgresql":
            self._returned.append(sa.func.pg_notify(channel, ""))
        self._statements: dict[int, DriverStatement] = {}

    def insert(self, jobs: Sequence[NewJob], now: int) -> list[int]:
        """Insert ``jobs``, all created at ``now``, all or none."""
        per_statement = ROWS_PER_STATEMENT if self._returning(2) else 1
        steps = [
            (self._statement(len(chunk)), _values(chunk, now))
            for chunk in _chunks(jobs, per_statement)
        ]
        if self.family == "sqlite":
            found = run_statements(self.engine, steps, begin="BEGIN IMMEDIATE")
        elif len(steps) == 1:
            found = run_statements(self.autocommit_engine, steps, commit=False)
        else:
            found = run_statements(self.engine, steps)
        return sorted(row[0] for rows in found for row in rows)

    @property
    def autocommit_engine(self) -> Engine:
        if self._autocommit is None:
            url = self.engine.url.render_as_string(hide_password=False)
            self._autocommit = create_engine(url, autocommit=True)
        return self._autocommit

    def dispose(self) -> None:
        if self._autocommit is not None:
            self._autocommit.dispose()

    def _statement(self, rows: int) -> DriverStatement:
        """The ``INSERT`` of ``rows`` rows, compiled once per size."""
        statement = self._statements.get(rows)
        if statement is None:
            keys = [f"{column}_{row}" for row in range(rows) for column in COLUMNS]
            binds = iter(keys)
            values = [
                {column: self._bind(next(binds), column) for column in COLUMNS}
                for _ in range(rows)
            ]
            insert = sa.insert(self.table).values(values)
            if self._returning(rows):
                insert = insert.returning(*self._returned)
            statement = DriverStatement.compile(insert, self.engine.dialect, keys)
            if len(self._statements) >= SIZES_KEPT:
                del self._statements[next(iter(self._statements))]
            self._statements[rows] = statement
        return statement

    def _bind(self, name: str, column: str) -> sa.BindParameter[Any]:
        return sa.bindparam(name, type_=self.table.c[column].type)

    def _returning(self, rows: int) -> bool:
        """Whether an ``INSERT`` of ``rows`` rows returns their ids: always
        on PostgreSQL and SQLite, only for several rows on MariaDB (one id
        is in the server's reply), never on MySQL (known once connected)."""
        if self.family != "mysql":
            return True
        return rows > 1 and bool(self.engine.dialect.insert_returning)


def _values(jobs: Sequence[NewJob], now: int) -> list[Any]:
    """The values of ``jobs``' rows one after the other, in ``COLUMNS`` order."""
    values: list[Any] = []
    for queue, payload, available_at in jobs:
        values += (queue, payload, 0, available_at, now, 0)
    return values


def _chunks(jobs: Sequence[NewJob], size: int) -> list[Sequence[NewJob]]:
    return [jobs[first : first + size] for first in range(0, len(jobs), size)]

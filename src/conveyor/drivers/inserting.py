"""Inserting pushed jobs in as few round trips as each database allows.

A push that fits in one statement (one job, or a bulk of up to
``ROWS_PER_STATEMENT``) is that statement alone, run in autocommit on
PostgreSQL and MySQL/MariaDB: one statement is already all-or-nothing, and
the ``BEGIN`` and ``COMMIT`` around it would be two more round trips (three
on PyMySQL, whose pool check-in sends a ``ROLLBACK`` too). Those pushes use
an engine of their own, opened in autocommit once per connection, since
switching a pooled connection to autocommit and back costs round trips too.
A larger bulk runs its statements in one transaction, as before.

The ids come back in the order of the jobs:

- PostgreSQL and MariaDB: one multi-row ``INSERT ... RETURNING``, which
  SQLAlchemy's "insertmanyvalues" sorts into parameter order;
- SQLite: the same statement, whose returned ids are sorted here. SQLite
  gives no order for ``RETURNING`` rows and SQLAlchemy then falls back to
  one statement per row; but with ``AUTOINCREMENT`` each new row gets an id
  above every id the table ever had, the rows of a ``VALUES`` list are
  inserted in their order, and ``BEGIN IMMEDIATE`` keeps every other writer
  out until the commit, so ascending ids are the jobs' order;
- MySQL, which has no ``RETURNING``: one ``INSERT`` per job in one
  transaction, each id read from the connection.

On PostgreSQL the statement also calls ``pg_notify`` for every row it
returns, which wakes idle workers (``worker.wakeup``) once the jobs are
committed and visible, without a statement of its own; identical
notifications of one transaction are delivered once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from conveyor.db import create_engine, family_of

#: The largest bulk pushed as one statement: SQLAlchemy's default page of
#: "insertmanyvalues", well under every database's limit on parameters.
ROWS_PER_STATEMENT = 1000


class JobInserter:
    """Inserts rows into the jobs table; the ids, in the rows' order."""

    def __init__(self, engine: Engine, table: sa.Table, channel: str) -> None:
        self.engine = engine
        self.table = table
        self.family = family_of(engine)
        self._autocommit: Engine | None = None
        returned: list[Any] = [table.c.id]
        if self.family == "postgresql":
            returned.append(sa.func.pg_notify(channel, ""))
        self._sorted = sa.insert(table).returning(
            *returned, sort_by_parameter_order=True
        )
        self._unsorted = sa.insert(table).returning(table.c.id)
        self._plain = sa.insert(table)

    def insert(self, rows: list[dict[str, Any]]) -> list[int]:
        if self.family == "sqlite":
            with self.engine.begin() as connection:
                found = connection.execute(self._unsorted, rows).scalars()
                return sorted(found)
        if len(rows) <= ROWS_PER_STATEMENT:
            with self.autocommit_engine.connect() as connection:
                if len(rows) == 1 or _returns_in_order(connection):
                    return self._insert_in(connection, rows)
        with self.engine.begin() as connection:
            return self._insert_in(connection, rows)

    @property
    def autocommit_engine(self) -> Engine:
        if self._autocommit is None:
            url = self.engine.url.render_as_string(hide_password=False)
            self._autocommit = create_engine(url, autocommit=True)
        return self._autocommit

    def dispose(self) -> None:
        if self._autocommit is not None:
            self._autocommit.dispose()

    def _insert_in(
        self, connection: Connection, rows: list[dict[str, Any]]
    ) -> list[int]:
        if _returns_in_order(connection):
            return [row[0] for row in connection.execute(self._sorted, rows)]
        ids = []
        for row in rows:
            key = connection.execute(self._plain, row).inserted_primary_key
            assert key is not None
            ids.append(int(key[0]))
        return ids


def _returns_in_order(connection: Connection) -> bool:
    """Whether one multi-row INSERT can return the ids in order: known once
    connected, when the dialect has seen MariaDB (yes) or MySQL (no)."""
    dialect = connection.dialect
    return bool(dialect.insert_executemany_returning_sort_by_parameter_order)

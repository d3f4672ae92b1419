"""Statements SQLAlchemy compiles once, run on the pool's driver connection.

A push is the one path where SQLAlchemy's execution layer costs as much as
the database does: 60 to 100 us a call (an execution context, the result's
metadata, the events) beside a round trip of 150 to 300 us. So SQLAlchemy
still writes each statement for its dialect and keeps the pool, and the push
runs the compiled text on the pooled driver connection. A driver error comes
out as SQLAlchemy's own exception (``IntegrityError``, ``OperationalError``
and the rest, as callers already expect), and a connection the error says is
gone is invalidated, as SQLAlchemy's execution would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class DriverStatement:
    """The text of a statement for one dialect, and how its values bind.

    ``keys`` name its per-row bind parameters in the order the caller gives
    their values; any other parameter (a constant such as PostgreSQL's
    notification channel) keeps the value it was built with.
    """

    sql: str
    keys: tuple[str, ...]
    positional: bool
    constants: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def compile(
        cls, statement: sa.ClauseElement, dialect: Dialect, keys: Sequence[str]
    ) -> DriverStatement:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        for name, bind in compiled.binds.items():
            if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                # The driver would get the value unconverted: refuse at build
                # time rather than store something else than was pushed.
                raise TypeError(f"{name} needs a bind processor on {dialect.name}")
        per_row = set(keys)
        constants = {
            name: bind.effective_value
            for name, bind in compiled.binds.items()
            if name not in per_row
        }
        order = compiled.positiontup
        if order is not None and (tuple(order) != tuple(keys) or constants):
            raise TypeError(f"unexpected parameter order on {dialect.name}")
        return cls(compiled.string, tuple(keys), order is not None, constants)

    def parameters(self, values: Sequence[Any]) -> Any:
        """The driver's parameters for ``values``, given in ``keys`` order."""
        if self.positional:
            return values
        named = dict(zip(self.keys, values, strict=True))
        named.update(self.constants)
        return named


def run_statements(
    engine: Engine,
    steps: Sequence[tuple[DriverStatement, Sequence[Any]]],
    *,
    begin: str | None = None,
    commit: bool = True,
) -> list[list[Any]]:
    """Run each statement with its values on one pooled connection; the rows
    each returned, or for one that returns none, the id it inserted (the
    driver's ``lastrowid``) as its one row.

    ``begin`` is the statement that opens the transaction (SQLite's
    ``BEGIN IMMEDIATE``), ``None`` where the driver opens it on its own;
    ``commit`` is false on an autocommit engine, where each statement
    commits itself (PyMySQL would send a ``COMMIT`` all the same). Any error
    leaves nothing behind: the pool rolls back what is open."""
    connection = engine.raw_connection()
    cursor = None
    try:
        cursor = connection.cursor()
        if begin is not None:
            cursor.execute(begin)
        found = []
        for statement, values in steps:
            cursor.execute(statement.sql, statement.parameters(values))
            if cursor.description is None:
                found.append([(cursor.lastrowid,)])
            else:
                found.append(list(cursor.fetchall()))
        cursor.close()
        if commit:
            connection.commit()
        return found
    except engine.dialect.loaded_dbapi.Error as exc:
        raise _translated(engine, connection, cursor, exc, steps) from exc
    finally:
        # Back to the pool, which rolls back whatever is left open.
        connection.close()


def _translated(
    engine: Engine,
    connection: Any,
    cursor: Any,
    exc: Any,
    steps: Sequence[tuple[DriverStatement, Sequence[Any]]],
) -> sa.exc.DBAPIError:
    """SQLAlchemy's exception for the driver's ``exc``; the connection is
    invalidated when ``exc`` says it is gone."""
    dialect = engine.dialect
    gone = dialect.is_disconnect(exc, connection.dbapi_connection, cursor)
    if gone:
        connection.invalidate(exc)
    statement = steps[0][0].sql if steps else ""
    error = sa.exc.DBAPIError.instance(
        statement,
        None,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=gone,
        dialect=dialect,
    )
    assert isinstance(error, sa.exc.DBAPIError)
    return error

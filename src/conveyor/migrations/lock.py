"""The migration lock: one run at a time per database and migrations table.

PostgreSQL takes a session advisory lock, MySQL and MariaDB a named lock
(``GET_LOCK``); both are held by the connection that runs the migrations and
vanish with it if the process dies, so a crashed run never leaves a stale
lock behind. SQLite has no such lock: there the whole run is one write
transaction (``BEGIN IMMEDIATE``), each migration a savepoint inside it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from conveyor.db import family_of
from conveyor.exceptions import MigrationLockTimeout

_POLL_SECONDS = 0.05


@contextmanager
def migration_lock(
    connection: Connection, *, table_name: str, timeout: float
) -> Iterator[None]:
    """Hold the migration lock for ``table_name`` for the ``with`` block.

    On SQLite the block runs inside the locking transaction, which commits
    when the block ends, whether or not it raised.
    """
    family = family_of(connection)
    if family == "postgresql":
        # Advisory locks are per database; the schema tells apart two
        # applications that share one.
        scope = connection.execute(sa.text("SELECT current_schema()")).scalar()
        key = _lock_key(f"{scope}.{table_name}")
        with _advisory_lock(connection, key, timeout):
            yield
    elif family == "mysql":
        # GET_LOCK names are server-wide, so the database is part of it.
        scope = connection.execute(sa.text("SELECT DATABASE()")).scalar()
        name = f"conveyor:{_lock_key(f'{scope}.{table_name}')}"
        with _named_lock(connection, name, timeout):
            yield
    else:
        with _write_transaction(connection, timeout):
            yield


def _lock_key(qualified_table: str) -> int:
    digest = hashlib.sha256(f"conveyor.migrations.{qualified_table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _timeout_error(timeout: float) -> MigrationLockTimeout:
    return MigrationLockTimeout(
        f"another migration run held the lock for more than {timeout:g} s; "
        "try again, or raise --lock-timeout"
    )


@contextmanager
def _advisory_lock(connection: Connection, key: int, timeout: float) -> Iterator[None]:
    # pg_try_advisory_lock in a loop rather than pg_advisory_lock under a
    # lock_timeout: the timeout then never leaks into the migrations' own
    # statements.
    deadline = time.monotonic() + timeout
    try_lock = sa.text("SELECT pg_try_advisory_lock(:key)")
    while not connection.execute(try_lock, {"key": key}).scalar_one():
        connection.commit()
        if time.monotonic() >= deadline:
            raise _timeout_error(timeout)
        time.sleep(_POLL_SECONDS)
    connection.commit()
    try:
        yield
    finally:
        _release(connection, sa.text("SELECT pg_advisory_unlock(:key)"), key=key)


@contextmanager
def _named_lock(connection: Connection, name: str, timeout: float) -> Iterator[None]:
    got = connection.execute(
        sa.text("SELECT GET_LOCK(:name, :timeout)"), {"name": name, "timeout": timeout}
    ).scalar()
    connection.commit()
    if got != 1:
        raise _timeout_error(timeout)
    try:
        yield
    finally:
        _release(connection, sa.text("SELECT RELEASE_LOCK(:name)"), name=name)


def _release(
    connection: Connection, statement: sa.TextClause, **params: object
) -> None:
    if connection.in_transaction():
        connection.rollback()
    connection.execute(statement, params)
    connection.commit()


@contextmanager
def _write_transaction(connection: Connection, timeout: float) -> Iterator[None]:
    # The busy timeout is how long BEGIN IMMEDIATE waits for another writer.
    # Set on the driver's connection, since any statement through SQLAlchemy
    # would itself begin the transaction.
    driver_connection = connection.connection.driver_connection
    assert driver_connection is not None
    driver_connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    try:
        transaction = connection.begin()
    except OperationalError as exc:
        if "locked" in str(exc.orig):
            raise _timeout_error(timeout) from exc
        raise
    # Commit even when the block raised: each migration ran in a savepoint
    # that was already rolled back if it failed, so what is left is exactly
    # what PostgreSQL and MySQL would have committed unit by unit.
    try:
        yield
    finally:
        if transaction.is_active:
            transaction.commit()

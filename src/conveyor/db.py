"""Engines and connections, shared by the queue and the migration tool.

A bare ``postgresql://`` URL selects psycopg 3 and a bare ``mysql://`` or
``mariadb://`` selects PyMySQL, so users never have to know SQLAlchemy's
driver suffixes. SQLite connections run in WAL mode with a busy timeout and
open their transactions with ``BEGIN IMMEDIATE``: the standard ``sqlite3``
module would otherwise run DDL outside any transaction, and a deferred
transaction that later wants to write can fail instead of waiting.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from conveyor.exceptions import ConfigError, DatabaseError

Family = Literal["sqlite", "postgresql", "mysql"]

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_DRIVER_PACKAGES = {
    "psycopg": ("psycopg", "conveyor[postgres]"),
    "pymysql": ("pymysql", "conveyor[mysql]"),
}
CONNECT_TIMEOUT = 10
#: Execution option naming how a SQLite transaction begins: ``IMMEDIATE``
#: (the default, for work that writes) or ``DEFERRED`` (for read-only work,
#: which then never waits for a writer).
SQLITE_BEGIN = "conveyor_sqlite_begin"


def parse_url(raw: str) -> URL:
    """Parse a database URL, choosing our default driver for bare schemes."""
    try:
        url = sa.make_url(raw)
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL '{raw}': {exc}") from exc
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    return url


def describe(url: URL | str) -> str:
    """The URL with its password hidden, for messages and logs."""
    if isinstance(url, str):
        try:
            parsed = sa.make_url(url)
        except ArgumentError:
            return url
        return parsed.render_as_string(hide_password=True)
    return url.render_as_string(hide_password=True)


def create_engine(
    raw_url: str, *, busy_timeout: float = 30.0, autocommit: bool = False
) -> Engine:
    """An engine for ``raw_url`` with the connection settings Conveyor needs.

    An ``autocommit`` engine (not for SQLite) commits every statement on its
    own and sends no ``ROLLBACK`` when a connection goes back to its pool:
    for work that is one statement, which needs neither."""
    url = parse_url(raw_url)
    family = url.get_backend_name()
    if family not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise ConfigError(
            f"unsupported database URL '{describe(url)}': use sqlite://, "
            "postgresql:// or mysql://"
        )
    _require_driver(url)
    connect_args: dict[str, Any] = {}

    if family == "sqlite":
        connect_args["timeout"] = busy_timeout
    elif family == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    elif family in ("mysql", "mariadb"):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
        connect_args.setdefault("charset", "utf8mb4")

    options: dict[str, Any] = {}
    if autocommit and family != "sqlite":
        options = {"isolation_level": "AUTOCOMMIT", "skip_autocommit_rollback": True}
    try:
        engine = sa.create_engine(url, connect_args=connect_args, **options)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(f"invalid database URL '{describe(url)}': {exc}") from exc
    except ImportError as exc:
        raise ConfigError(
            f"{describe(url)} needs the {exc.name or 'missing'} driver, "
            "which is not installed"
        ) from exc
    if family == "sqlite":
        _configure_sqlite(engine, busy_timeout)
    return engine


def _require_driver(url: URL) -> None:
    driver = url.get_driver_name()
    if driver in _DRIVER_PACKAGES:
        module, extra = _DRIVER_PACKAGES[driver]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"{describe(url)} needs the {module} driver: pip install '{extra}'"
            )


def _configure_sqlite(engine: Engine, busy_timeout: float) -> None:
    in_memory = engine.url.database in (None, "", ":memory:")

    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions
        # begin; see "Serializable isolation / Savepoints / Transactional
        # DDL" in SQLAlchemy's SQLite dialect documentation.
        dbapi_connection.isolation_level = None
        if not in_memory:
            _enable_wal(dbapi_connection, busy_timeout)

    @sa.event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _enable_wal(dbapi_connection: Any, busy_timeout: float) -> None:
    """Switch the file to WAL mode (a no-op once it is in it).

    The switch needs a lock that SQLite does not wait for through the busy
    timeout: two processes opening a new file at once can see "database is
    locked" here, so wait for it ourselves."""
    import sqlite3  # only SQLite engines get here

    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def family_of(engine_or_connection: Engine | Connection) -> Family:
    """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB counts as MySQL)."""
    name = engine_or_connection.dialect.name
    if name in ("mysql", "mariadb"):
        return "mysql"
    if name in ("sqlite", "postgresql"):
        return name  # type: ignore[return-value]
    raise ConfigError(f"unsupported database '{name}': use SQLite, PostgreSQL or MySQL")


@contextmanager
def connect(engine: Engine, *, read_only: bool = False) -> Iterator[Connection]:
    """A connection, with a failure to connect turned into one clear line.

    A ``read_only`` connection never waits for a writer on SQLite (its
    transactions begin deferred) and autocommits elsewhere: each read is then
    a statement of its own, without the BEGIN and ROLLBACK round trips that
    a transaction would cost on top.
    """
    try:
        connection = engine.connect()
        if read_only and engine.dialect.name == "sqlite":
            connection = connection.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        elif read_only:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(
            f"cannot connect to {describe(engine.url)}: {reason}"
        ) from exc
    with connection:
        yield connection

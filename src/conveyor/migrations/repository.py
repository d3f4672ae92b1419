"""The migrations table: which migrations ran, in which batch, and the
checksum of each file when it ran.

On MySQL and MariaDB, where DDL commits itself, a second table
(``<table>_attempts``) remembers a migration that started but did not finish,
with the statement that failed and how many before it were committed. That
row never counts as applied; it is removed when a later run succeeds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import NoSuchTableError

from conveyor.exceptions import MigrationTableError

_REQUIRED_COLUMNS = {"id", "migration", "batch"}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class AppliedMigration:
    """A row of the migrations table."""

    id: int
    migration: str
    batch: int
    checksum: str | None
    applied_at: dt.datetime | None


@dataclass(frozen=True)
class Record:
    """A row about to be added to the migrations table."""

    migration: str
    batch: int
    checksum: str
    applied_at: dt.datetime = field(default_factory=_utcnow)


@dataclass(frozen=True)
class Attempt:
    """A migration that started on MySQL/MariaDB and did not finish."""

    migration: str
    direction: str
    state: str
    started_at: dt.datetime | None
    error: str | None
    statement: str | None
    committed: int


class MigrationRepository:
    """Reads and writes the bookkeeping tables on one connection.

    Writes join the caller's transaction: recording a migration commits or
    rolls back with the migration itself.
    """

    def __init__(self, connection: Connection, table_name: str) -> None:
        self.connection = connection
        self.table_name = table_name
        metadata = sa.MetaData()
        self.table = sa.Table(
            table_name,
            metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("migration", sa.String(255), nullable=False, unique=True),
            sa.Column("batch", sa.Integer, nullable=False),
            sa.Column("checksum", sa.String(64), nullable=True),
            sa.Column("applied_at", sa.DateTime, nullable=True),
        )
        self.attempts = sa.Table(
            f"{table_name}_attempts",
            metadata,
            sa.Column("migration", sa.String(255), primary_key=True),
            sa.Column("direction", sa.String(4), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("started_at", sa.DateTime, nullable=True),
            sa.Column("error", sa.Text, nullable=True),
            sa.Column("statement", sa.Text, nullable=True),
            sa.Column("committed", sa.Integer, nullable=False, default=0),
        )

    # -- the tables themselves ------------------------------------------------

    def exists(self) -> bool:
        return sa.inspect(self.connection).has_table(self.table_name)

    def ensure(self, *, with_attempts: bool = False) -> None:
        """Create the tables that are missing and check the shape of the
        migrations table if it was already there."""
        if not self.check_shape():
            self.table.create(self.connection)
        if with_attempts:
            self.attempts.create(self.connection, checkfirst=True)

    def check_shape(self) -> bool:
        """Whether the migrations table exists, refusing a table of that name
        that is not ours, such as CodeIgniter 3's one-row ``version`` table.

        One question to the catalog answers both, rather than asking first
        whether the table exists."""
        try:
            reflected = sa.inspect(self.connection).get_columns(self.table_name)
        except NoSuchTableError:
            return False
        columns = {column["name"] for column in reflected}
        missing = _REQUIRED_COLUMNS - columns
        if missing:
            raise MigrationTableError(
                f"table '{self.table_name}' exists but is not a Conveyor "
                f"migrations table (it has {', '.join(sorted(columns))}; "
                f"missing {', '.join(sorted(missing))}); set "
                '[migrations] table = "..." in conveyor.toml to use another name'
            )
        return True

    def has_attempts_table(self) -> bool:
        return sa.inspect(self.connection).has_table(self.attempts.name)

    # -- applied migrations ---------------------------------------------------

    def applied(self) -> list[AppliedMigration]:
        """Every recorded migration, in the order they were applied."""
        t = self.table
        query = sa.select(
            t.c.id, t.c.migration, t.c.batch, t.c.checksum, t.c.applied_at
        ).order_by(t.c.id)
        return [AppliedMigration(*row) for row in self.connection.execute(query)]

    def last_batch(self) -> int:
        query = sa.select(sa.func.coalesce(sa.func.max(self.table.c.batch), 0))
        return int(self.connection.execute(query).scalar_one())

    def record(self, *records: Record) -> None:
        """Add rows for migrations that ran, in one statement however many."""
        rows = [asdict(record) for record in records]
        if rows:
            self.connection.execute(self.table.insert(), rows)

    def remove(self, migration: str) -> None:
        self.connection.execute(
            self.table.delete().where(self.table.c.migration == migration)
        )

    # -- unfinished attempts (MySQL / MariaDB) -----------------------------------

    def unfinished(self) -> dict[str, Attempt]:
        # Only MySQL and MariaDB keep attempts; elsewhere asking the catalog
        # whether the table exists would be a wasted query.
        if self.connection.dialect.name not in ("mysql", "mariadb"):
            return {}
        if not self.has_attempts_table():
            return {}
        a = self.attempts
        rows = self.connection.execute(
            sa.select(
                a.c.migration,
                a.c.direction,
                a.c.state,
                a.c.started_at,
                a.c.error,
                a.c.statement,
                a.c.committed,
            )
        )
        return {row.migration: Attempt(*row) for row in rows}

    def start_attempt(self, migration: str, direction: str) -> None:
        self.forget_attempt(migration)
        self.connection.execute(
            self.attempts.insert().values(
                migration=migration,
                direction=direction,
                state="running",
                started_at=_utcnow(),
                committed=0,
            )
        )

    def fail_attempt(
        self, migration: str, *, error: str, statement: str | None, committed: int
    ) -> None:
        self.connection.execute(
            self.attempts.update()
            .where(self.attempts.c.migration == migration)
            .values(
                state="failed", error=error, statement=statement, committed=committed
            )
        )

    def forget_attempt(self, migration: str) -> None:
        self.connection.execute(
            self.attempts.delete().where(self.attempts.c.migration == migration)
        )

"""Running one migration in one direction, and recording that it ran.

On PostgreSQL and SQLite a migration and its row in the migrations table
commit together or not at all. MySQL and MariaDB commit DDL the moment it
runs, so there the executor first records that the migration started; if it
fails, that record says which statement failed and how many before it were
committed, which is what a user needs to repair the schema by hand.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from conveyor.db import Family
from conveyor.exceptions import MigrationFailed
from conveyor.migrations.discovery import MigrationFile
from conveyor.migrations.loader import line_in_file
from conveyor.migrations.migration import Database, Migration
from conveyor.migrations.repository import MigrationRepository, Record

if TYPE_CHECKING:
    from alembic.operations import Operations

log = logging.getLogger(__name__)

Direction = Literal["up", "down"]
_STATEMENT_PREVIEW = 200


@dataclass(frozen=True)
class Step:
    """One migration run in one direction, as reported to the user."""

    migration: str
    direction: Direction
    batch: int | None
    seconds: float
    #: The SQL it would run, under ``--pretend``.
    sql: str | None = None
    #: Its row was removed without running ``down()`` (``rollback --force``
    #: on a migration whose file is gone).
    forgotten: bool = False


class Executor:
    """Runs migrations on one connection, recording each in the repository."""

    def __init__(
        self, connection: Connection, repository: MigrationRepository, family: Family
    ) -> None:
        self.connection = connection
        self.repository = repository
        self.family = family
        self._in_run = False
        #: Rows for migrations applied inside the run's transaction, written
        #: together just before it commits.
        self._unrecorded: list[Record] = []
        self._operations: Operations | None = None

    @property
    def transactional_ddl(self) -> bool:
        """PostgreSQL and SQLite can roll DDL back; MySQL and MariaDB cannot."""
        return self.family != "mysql"

    @contextmanager
    def run_transaction(self) -> Iterator[None]:
        """The one transaction a whole run shares where DDL is transactional.

        Each migration is a savepoint inside it: a failed one is rolled back
        alone, and what ran before it commits when the run ends, whether or
        not it raised. One commit for the run, rather than one per migration,
        spares a disk flush per migration. SQLite's transaction is the
        migration lock itself; MySQL commits each migration on its own.

        The rows of the migrations applied in the run are written in one
        statement just before the commit, rather than one round trip to the
        server each: they commit with their migrations all the same, and a
        migration that failed was never added.
        """
        if self.family != "postgresql":
            yield
            return
        self.checkpoint()
        transaction = self.connection.begin()
        self._in_run = True
        try:
            yield
        finally:
            self._in_run = False
            if transaction.is_active:
                self.repository.record(*self._unrecorded)
                transaction.commit()
            self._unrecorded.clear()

    @contextmanager
    def unit(self) -> Iterator[None]:
        """One all-or-nothing unit of work: a savepoint inside the run's
        transaction, or a transaction of its own on MySQL."""
        if self.transactional_ddl and self.connection.in_transaction():
            with self.connection.begin_nested():
                yield
            return
        self.checkpoint()
        with self.connection.begin():
            yield

    def checkpoint(self) -> None:
        """Commit reads and bookkeeping done outside a unit, except inside
        the run's shared transaction, which commits when the run ends."""
        if self.family == "sqlite" or self._in_run:
            return
        if self.connection.in_transaction():
            self.connection.commit()

    def apply(self, file: MigrationFile, cls: type[Migration], batch: int) -> Step:
        started = time.perf_counter()
        self._run(
            file,
            cls,
            "up",
            lambda: self._record(Record(file.name, batch, file.checksum)),
        )
        step = Step(file.name, "up", batch, time.perf_counter() - started)
        log.info(
            "migration %s applied in batch %d (%.3f s)",
            file.name,
            batch,
            step.seconds,
            extra={"event": "migration_applied"},
        )
        return step

    def _record(self, record: Record) -> None:
        if self._in_run:
            self._unrecorded.append(record)
        else:
            self.repository.record(record)

    def revert(self, file: MigrationFile, cls: type[Migration], batch: int) -> Step:
        started = time.perf_counter()
        self._run(file, cls, "down", lambda: self.repository.remove(file.name))
        step = Step(file.name, "down", batch, time.perf_counter() - started)
        log.info(
            "migration %s rolled back (%.3f s)",
            file.name,
            step.seconds,
            extra={"event": "migration_rolled_back"},
        )
        return step

    def forget(self, migration: str, batch: int) -> Step:
        with self.unit():
            self.repository.remove(migration)
        log.warning(
            "migration %s forgotten without running down(): its file is gone",
            migration,
            extra={"event": "migration_forgotten"},
        )
        return Step(migration, "down", batch, 0.0, forgotten=True)

    def pretend(
        self, file: MigrationFile, cls: type[Migration], direction: Direction
    ) -> Step:
        """The SQL ``direction`` would run, written by Alembic's offline mode
        and our own ``Database``; nothing reaches the database."""
        from conveyor.migrations.pretend import PretendOperations

        output = io.StringIO()
        dialect = self.connection.dialect
        migration = cls(
            db=Database(
                None, dialect=dialect, folder=file.path.parent, pretend_output=output
            ),
            schema=PretendOperations(self.connection, output),
            dialect=self.family,
        )
        started = time.perf_counter()
        try:
            getattr(migration, direction)()
        except Exception as exc:
            raise self._failure(file, direction, exc, [], pretend=True) from exc
        return Step(
            file.name,
            direction,
            None,
            time.perf_counter() - started,
            sql=output.getvalue().strip(),
        )

    # -- running for real ---------------------------------------------------

    def _run(
        self,
        file: MigrationFile,
        cls: type[Migration],
        direction: Direction,
        record: Any,
    ) -> None:
        tracks_attempts = self.family == "mysql"
        if tracks_attempts:
            with self.unit():
                self.repository.start_attempt(file.name, direction)

        # Only MySQL needs the statements sent, to count what a failure there
        # left committed; listening costs a little on every statement.
        statements: list[str] = []
        recording = (
            _recording(self.connection, statements)
            if tracks_attempts
            else nullcontext()
        )
        try:
            with self.unit():
                migration = self._instantiate(file, cls)
                with recording:
                    getattr(migration, direction)()
                record()
                if tracks_attempts:
                    self.repository.forget_attempt(file.name)
        except Exception as exc:
            failure = self._failure(file, direction, exc, statements)
            if tracks_attempts:
                self._remember_failure(failure)
            raise failure from exc

    def _instantiate(self, file: MigrationFile, cls: type[Migration]) -> Migration:
        return cls(
            db=Database(
                self.connection,
                dialect=self.connection.dialect,
                folder=file.path.parent,
            ),
            schema=self._schema_operations(),
            dialect=self.family,
        )

    def _schema_operations(self) -> Operations:
        """Alembic's operations on this connection, configured once a run."""
        if self._operations is None:
            from alembic.operations import Operations
            from alembic.runtime.migration import MigrationContext

            context = MigrationContext.configure(connection=self.connection)
            self._operations = Operations(context)
        return self._operations

    def _remember_failure(self, failure: MigrationFailed) -> None:
        with self.unit():
            self.repository.fail_attempt(
                failure.migration,
                error=failure.reason,
                statement=failure.statement,
                committed=failure.committed,
            )

    def _failure(
        self,
        file: MigrationFile,
        direction: Direction,
        exc: Exception,
        statements: list[str],
        *,
        pretend: bool = False,
    ) -> MigrationFailed:
        """One line naming the file, the error and, for a database error, the
        statement; on MySQL also what stayed committed."""
        if isinstance(exc, DBAPIError):
            reason = _first_line(str(exc.orig))
            statement = exc.statement
            before = statements[:-1] if statements else []
        else:
            reason = f"{type(exc).__name__}: {_first_line(str(exc))}"
            statement = None
            before = statements
        line = line_in_file(exc, file)
        where = f"{file.path}:{line}" if line else str(file.path)
        message = f"{where}: {direction}() failed: {reason}"
        if statement:
            message += f" [in: {_preview(statement)}]"

        committed = 0
        if pretend:
            message += "; nothing ran (--pretend)"
        elif self.family == "mysql":
            committed = _committed_count(before)
            message += (
                f"; {committed} earlier statement(s) of this migration were "
                "committed anyway (MySQL/MariaDB commit DDL at once) and must be "
                "undone by hand before running it again"
                if committed
                else "; nothing of it was committed"
            )
        else:
            message += "; nothing of it was kept"
        return MigrationFailed(
            message,
            migration=file.name,
            reason=f"{direction}() failed: {reason}",
            statement=statement,
            committed=committed,
        )


@contextmanager
def _recording(connection: Connection, statements: list[str]) -> Iterator[None]:
    """Collect every statement sent on ``connection`` during the block."""

    def before_cursor_execute(
        _conn: Any, _cursor: Any, statement: str, *_args: Any
    ) -> None:
        statements.append(statement)

    sa.event.listen(connection, "before_cursor_execute", before_cursor_execute)
    try:
        yield
    finally:
        sa.event.remove(connection, "before_cursor_execute", before_cursor_execute)


def _committed_count(statements: list[str]) -> int:
    """How many of ``statements`` MySQL has committed: all of them up to and
    including the last one that commits implicitly."""
    # Here rather than at the top: sqlparse is needed only after a failure
    # on MySQL, and every command would otherwise load it at start-up.
    from conveyor.migrations.script import commits_implicitly

    committed = 0
    for index, statement in enumerate(statements, start=1):
        if commits_implicitly(statement):
            committed = index
    return committed


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else text


def _preview(statement: str) -> str:
    flat = " ".join(statement.split())
    if len(flat) <= _STATEMENT_PREVIEW:
        return flat
    return flat[: _STATEMENT_PREVIEW - 3] + "..."

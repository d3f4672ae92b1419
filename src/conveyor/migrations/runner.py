"""The migrator: what ``migrate``, ``rollback``, ``reset``, ``refresh``,
``fresh``, ``install`` and ``status`` do.

Every command that changes the schema holds the migration lock for its whole
run and reads the recorded state only once it holds it, so a second run that
waited finds nothing left to do. Every file a command needs is imported and
checked before the first change, so a bad file leaves the database as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from conveyor.db import connect, family_of
from conveyor.exceptions import MigrationError, MigrationFileError
from conveyor.migrations.discovery import (
    Discovery,
    MigrationFile,
    check_unique_names,
    discover,
)
from conveyor.migrations.execution import Executor, Step
from conveyor.migrations.loader import check_syntax, load_migration_class
from conveyor.migrations.lock import migration_lock
from conveyor.migrations.migration import Migration
from conveyor.migrations.repository import AppliedMigration, MigrationRepository
from conveyor.migrations.status import Status, build_status

log = logging.getLogger(__name__)

StepListener = Callable[[Step], None]


@dataclass
class _Run:
    connection: Connection
    repository: MigrationRepository
    executor: Executor
    discovery: Discovery
    #: False only under --pretend on a database never migrated.
    table_exists: bool = True

    def applied(self) -> list[AppliedMigration]:
        return self.repository.applied() if self.table_exists else []


class Migrator:
    """Runs the migrations of one folder against one database."""

    def __init__(
        self,
        engine: Engine,
        folder: Path,
        *,
        table: str = "migrations",
        lock_timeout: float = 60.0,
        on_step: StepListener | None = None,
    ) -> None:
        self.engine = engine
        self.folder = folder
        self.table = table
        self.lock_timeout = lock_timeout
        self.on_step = on_step

    # -- reading --------------------------------------------------------------

    def status(self) -> Status:
        """Every migration, ran or pending, with files gone, edited or failed."""
        with connect(self.engine, read_only=True) as connection:
            repository = MigrationRepository(connection, self.table)
            return build_status(discover(self.folder), repository)

    # -- changing ------------------------------------------------------------

    def install(self) -> bool:
        """Create the migrations table; ``False`` if it was already there."""
        with connect(self.engine, read_only=True) as connection:
            existed = MigrationRepository(connection, self.table).exists()
        with self._locked():
            return not existed

    def migrate(self, *, step: bool = False, pretend: bool = False) -> list[Step]:
        """Run every pending migration in file-name order as one new batch
        (or one batch each with ``step``)."""
        if pretend:
            return self._pretend_migrate()
        with self._locked() as run:
            return self._migrate(run, step=step)

    def rollback(
        self, *, steps: int | None = None, force: bool = False, pretend: bool = False
    ) -> list[Step]:
        """Undo the last batch, or the last ``steps`` migrations newest first
        whatever their batches."""
        with self._locked(pretend=pretend) as run:
            targets = _last_batch_or_steps(run.applied(), steps)
            return self._rollback(run, targets, force=force, pretend=pretend)

    def reset(self, *, force: bool = False, pretend: bool = False) -> list[Step]:
        """Undo every applied migration, newest first."""
        with self._locked(pretend=pretend) as run:
            targets = list(reversed(run.applied()))
            return self._rollback(run, targets, force=force, pretend=pretend)

    def refresh(self, *, steps: int | None = None, force: bool = False) -> list[Step]:
        """Roll back everything (or the last ``steps`` migrations), then
        migrate, under one lock."""
        with self._locked() as run:
            applied = run.applied()
            targets = list(reversed(applied if steps is None else applied[-steps:]))
            undone = self._rollback(run, targets, force=force)
            return undone + self._migrate(run)

    def fresh(self) -> tuple[list[str], list[Step]]:
        """Drop every table of the database without running ``down()``, then
        migrate; returns the dropped tables and the steps."""
        with self._locked() as run:
            dropped = _drop_all_tables(run.connection)
            run.repository.ensure(with_attempts=run.executor.family == "mysql")
            run.executor.checkpoint()
            return dropped, self._migrate(run)

    # -- the steps shared by the commands ------------------------------------

    @contextmanager
    def _locked(self, *, pretend: bool = False) -> Iterator[_Run]:
        discovery = discover(self.folder)
        for path in discovery.skipped:
            log.warning(
                "%s: skipped, not named like a migration "
                "(YYYY_MM_DD_HHMMSS_snake_case_name.py)",
                path,
                extra={"event": "migration_file_skipped"},
            )
        with connect(self.engine, read_only=pretend) as connection:
            family = family_of(connection)
            repository = MigrationRepository(connection, self.table)
            executor = Executor(connection, repository, family)
            if pretend:
                exists = repository.check_shape()
                yield _Run(connection, repository, executor, discovery, exists)
                return
            with migration_lock(
                connection, table_name=self.table, timeout=self.lock_timeout
            ):
                repository.ensure(with_attempts=family == "mysql")
                executor.checkpoint()
                with executor.run_transaction():
                    yield _Run(connection, repository, executor, discovery)
                executor.checkpoint()

    def _warn_about_broken_pending(self, run: _Run) -> None:
        """Name the pending files a rollback leaves alone but the next
        migrate would stop at, so the user hears of them now."""
        done = {row.migration for row in run.applied()}
        for file in run.discovery.files:
            if file.name in done:
                continue
            try:
                check_syntax(file)
            except MigrationError as exc:
                log.warning("%s", exc, extra={"event": "migration_file_broken"})

    def _migrate(self, run: _Run, *, step: bool = False) -> list[Step]:
        pending = _pending(run.discovery, run.applied())
        classes = _load_all(pending)
        batch = run.repository.last_batch() + 1
        steps = []
        for file in pending:
            steps.append(self._report(run.executor.apply(file, classes[file], batch)))
            if step:
                batch += 1
        return steps

    def _pretend_migrate(self) -> list[Step]:
        with self._locked(pretend=True) as run:
            pending = _pending(run.discovery, run.applied())
            classes = _load_all(pending)
            return [
                self._report(run.executor.pretend(file, classes[file], "up"))
                for file in pending
            ]

    def _rollback(
        self,
        run: _Run,
        targets: Sequence[AppliedMigration],
        *,
        force: bool,
        pretend: bool = False,
    ) -> list[Step]:
        self._warn_about_broken_pending(run)
        files = run.discovery.by_name()
        missing = [t.migration for t in targets if t.migration not in files]
        if missing and not force:
            raise MigrationFileError(
                f"{self.folder / (missing[0] + '.py')}: recorded as applied but the "
                "file is gone; nothing was rolled back (restore it, or pass --force "
                "to forget its row without running down())"
            )
        present = [files[t.migration] for t in targets if t.migration in files]
        classes = _load_all(present)
        for file in present:
            if not classes[file].can_roll_back():
                raise MigrationFileError(
                    f"{file.path}: {classes[file].__name__} has no down(); "
                    "nothing was rolled back"
                )

        steps = []
        for target in targets:
            found = files.get(target.migration)
            if found is None:
                step = run.executor.forget(target.migration, target.batch)
            elif pretend:
                step = run.executor.pretend(found, classes[found], "down")
            else:
                step = run.executor.revert(found, classes[found], target.batch)
            steps.append(self._report(step))
        return steps

    def _report(self, step: Step) -> Step:
        if self.on_step is not None:
            self.on_step(step)
        return step


def _pending(
    discovery: Discovery, applied: Sequence[AppliedMigration]
) -> list[MigrationFile]:
    check_unique_names(discovery.files)
    done = {row.migration for row in applied}
    return [file for file in discovery.files if file.name not in done]


def _load_all(files: Sequence[MigrationFile]) -> dict[MigrationFile, type[Migration]]:
    """Import every file before anything runs, so a broken one stops the
    command while the database is still untouched."""
    return {file: load_migration_class(file) for file in files}


def _last_batch_or_steps(
    applied: Sequence[AppliedMigration], steps: int | None
) -> list[AppliedMigration]:
    if steps is not None:
        return list(reversed(applied[-steps:])) if steps > 0 else []
    if not applied:
        return []
    last = max(row.batch for row in applied)
    return [row for row in reversed(applied) if row.batch == last]


def _drop_all_tables(connection: Connection) -> list[str]:
    metadata = sa.MetaData()
    metadata.reflect(connection)
    names = [table.name for table in reversed(metadata.sorted_tables)]
    metadata.drop_all(connection)
    return names

"""What ``migrate status`` reports, built from the folder listing and the
bookkeeping tables without importing a single migration module."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from conveyor.exceptions import MigrationFileError
from conveyor.migrations.discovery import Discovery
from conveyor.migrations.loader import check_syntax
from conveyor.migrations.repository import Attempt, MigrationRepository

State = Literal["ran", "pending", "missing", "failed", "running"]


@dataclass(frozen=True)
class StatusRow:
    """One migration as ``status`` shows it."""

    migration: str
    state: State
    batch: int | None = None
    applied_at: dt.datetime | None = None
    #: The file changed since it ran (its checksum differs).
    edited: bool = False
    #: Why a migration failed, or is still marked running, on MySQL/MariaDB.
    detail: str | None = None


@dataclass(frozen=True)
class Status:
    rows: tuple[StatusRow, ...]
    #: One line each: files skipped or broken, names used twice.
    problems: tuple[str, ...]
    folder_exists: bool

    @property
    def pending(self) -> tuple[StatusRow, ...]:
        return tuple(row for row in self.rows if row.state == "pending")


def build_status(discovery: Discovery, repository: MigrationRepository) -> Status:
    exists = repository.check_shape()
    applied = {row.migration: row for row in repository.applied()} if exists else {}
    unfinished = repository.unfinished() if exists else {}
    files = discovery.by_name()
    problems = [_skipped(path.name) for path in discovery.skipped]
    problems += _duplicate_names(discovery)

    rows = []
    for name in sorted(set(files) | set(applied)):
        record, file = applied.get(name), files.get(name)
        if record is not None:
            rows.append(
                StatusRow(
                    migration=name,
                    state="ran" if file is not None else "missing",
                    batch=record.batch,
                    applied_at=record.applied_at,
                    edited=(
                        file is not None
                        and record.checksum is not None
                        and record.checksum != file.checksum
                    ),
                )
            )
            continue
        assert file is not None
        try:
            check_syntax(file)
        except MigrationFileError as exc:
            problems.append(str(exc))
        attempt = unfinished.get(name)
        if attempt is None:
            rows.append(StatusRow(migration=name, state="pending"))
        else:
            detail = (
                _failure_detail(attempt)
                if attempt.state == "failed"
                else (
                    f"started {attempt.started_at:%Y-%m-%d %H:%M:%S} UTC and never "
                    "finished (still running, or its process died)"
                    if attempt.started_at
                    else "started and never finished"
                )
            )
            state: State = "failed" if attempt.state == "failed" else "running"
            rows.append(StatusRow(migration=name, state=state, detail=detail))
    return Status(tuple(rows), tuple(problems), discovery.folder_exists)


def _failure_detail(attempt: Attempt) -> str:
    detail = attempt.error or "failed"
    if attempt.committed:
        detail += (
            f"; {attempt.committed} statement(s) before it stayed committed "
            "and must be undone by hand"
        )
    return detail


def _skipped(name: str) -> str:
    return (
        f"{name}: skipped, not named like a migration "
        "(YYYY_MM_DD_HHMMSS_snake_case_name.py)"
    )


def _duplicate_names(discovery: Discovery) -> list[str]:
    seen: dict[str, str] = {}
    problems = []
    for file in discovery.files:
        first = seen.setdefault(file.description, file.name)
        if first != file.name:
            problems.append(
                f"{file.path.name}: duplicate migration name "
                f"'{file.description}', already used by {first}.py"
            )
    return problems


__all__ = ["Status", "StatusRow", "build_status"]

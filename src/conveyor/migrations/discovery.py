"""Finding migration files and telling them apart, without importing them.

A migration file is named ``YYYY_MM_DD_HHMMSS_snake_case_name.py``; the file
name without ``.py`` is the migration's identity in the migrations table, and
file-name order is run order. Reading the folder never imports a module, so
``status`` stays fast however many files there are.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from conveyor.exceptions import MigrationFileError

FILE_PATTERN = re.compile(
    r"^(?P<timestamp>\d{4}_\d{2}_\d{2}_\d{6})_(?P<name>[a-z][a-z0-9_]*)\.py$"
)
_IGNORED = {"__init__.py"}


@dataclass(frozen=True)
class MigrationFile:
    """A migration file on disk."""

    path: Path

    @cached_property
    def name(self) -> str:
        """The identity recorded in the migrations table: the file name
        without ``.py``."""
        return self.path.name[:-3]

    @property
    def timestamp(self) -> str:
        return self.name[:17]

    @property
    def description(self) -> str:
        """The snake_case part after the timestamp."""
        return self.name[18:]

    @cached_property
    def checksum(self) -> str:
        """SHA-256 of the source with line endings, a BOM and trailing white
        space normalised, so an editor's reformatting is not an edit."""
        with open(self.path, "rb") as handle:
            text = handle.read().decode("utf-8-sig", errors="replace")
        lines = [line.rstrip() for line in text.splitlines()]
        normalised = "\n".join(lines).strip("\n")
        return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Discovery:
    """What a migrations folder holds."""

    files: tuple[MigrationFile, ...]
    #: Files that do not follow the naming pattern, left out with a warning.
    skipped: tuple[Path, ...]
    folder_exists: bool = True

    def by_name(self) -> dict[str, MigrationFile]:
        return {file.name: file for file in self.files}


def discover(folder: Path) -> Discovery:
    """The migration files of ``folder`` in run order (file-name order)."""
    if not folder.is_dir():
        return Discovery(files=(), skipped=(), folder_exists=False)

    files: list[MigrationFile] = []
    skipped: list[Path] = []
    # scandir, sorted by name, rather than sorted Paths each asked is_dir():
    # the directory entry already knows its type, which spares a stat() per
    # file in a folder of thousands.
    with os.scandir(folder) as entries:
        listing = sorted((entry.name, entry.is_dir()) for entry in entries)
    for name, is_dir in listing:
        # Folders are where SQL scripts and helpers live; only files that
        # look like something else than a migration are worth a warning.
        if is_dir or name.startswith((".", "__")) or name in _IGNORED:
            continue
        if FILE_PATTERN.match(name):
            files.append(MigrationFile(folder / name))
        else:
            skipped.append(folder / name)
    return Discovery(files=tuple(files), skipped=tuple(skipped))


def check_unique_names(files: Sequence[MigrationFile]) -> None:
    """Refuse two files with the same name after their timestamps: their
    classes would share a name and ``make`` would never have written them."""
    seen: dict[str, MigrationFile] = {}
    for file in files:
        other = seen.setdefault(file.description, file)
        if other is not file:
            raise MigrationFileError(
                f"{file.path}: duplicate migration name '{file.description}', "
                f"already used by {other.path.name}; rename one of them"
            )


def class_name_for(description: str) -> str:
    """``create_users_table`` becomes ``CreateUsersTable``."""
    return "".join(part.capitalize() for part in description.split("_") if part)

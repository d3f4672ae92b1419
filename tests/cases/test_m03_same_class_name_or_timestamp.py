"""Case M03: two migrations with the same class name or timestamp.

``migrate make`` refuses a name whose class already exists; files with
the same timestamp run in full-file-name order and are both recorded; equal
class names do not clash, since each file is a module of its own; rollback
undoes each by its file name; two files of one name (after the timestamp)
are refused with a message naming both."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor.exceptions import MigrationFileError
from conveyor.migrations.generator import make_migration
from helpers import (
    migrations_recorded,
    run_cli,
    table_migration,
    table_names,
    write_migration,
)

NOON = dt.datetime(2024, 3, 1, 12, 0, 0, 500)


def test_a_name_whose_class_exists_is_refused(tmp_path: Path) -> None:
    """Making the same migration twice, even in another second."""
    first = make_migration(tmp_path, "add_flag_to_items", now=NOON)

    with pytest.raises(MigrationFileError, match="already exists") as caught:
        make_migration(tmp_path, "add_flag_to_items")

    assert str(first) in str(caught.value)
    assert len(list(tmp_path.iterdir())) == 1


def test_make_twice_from_the_cli_is_refused_in_one_line(tmp_path: Path) -> None:
    """``conveyor migrate make add_flag_to_items`` twice: the second exits 1
    with one line naming the class and the file that has it, and writes
    nothing."""
    first = run_cli(["migrate", "make", "add_flag_to_items"], cwd=tmp_path)
    assert first.exit_code == 0, first.output
    [made] = (tmp_path / "migrations").iterdir()

    second = run_cli(["migrate", "make", "add_flag_to_items"], cwd=tmp_path)

    assert second.exit_code == 1
    assert second.stderr == (
        "error: a migration named 'add_flag_to_items' (class AddFlagToItems) "
        f"already exists: {made}\n"
    )
    assert list((tmp_path / "migrations").iterdir()) == [made]


def test_same_timestamp_files_both_run_in_full_name_order(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """``2024_05_01_120000_a`` and ``_b``, both with class ``Same``: migrate
    runs a then b and records both; rollback undoes each (its own table);
    migrate runs both again."""
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_05_01_120000_b", table_migration("bee", "Same"))
    write_migration(folder, "2024_05_01_120000_a", table_migration("ay", "Same"))

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert migrations_recorded(engine) == ["2024_05_01_120000_a", "2024_05_01_120000_b"]
    assert {"ay", "bee"} <= table_names(engine)

    result = run_cli(["migrate", "rollback"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert [line.split()[2] for line in result.stdout.splitlines()] == [
        "2024_05_01_120000_b",
        "2024_05_01_120000_a",
    ]
    assert migrations_recorded(engine) == []
    assert not {"ay", "bee"} & table_names(engine)

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert migrations_recorded(engine) == ["2024_05_01_120000_a", "2024_05_01_120000_b"]
    assert {"ay", "bee"} <= table_names(engine)


def test_duplicate_migration_names_are_refused(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """Two files named ``add_flag`` after different timestamps (a bad merge):
    migrate refuses before any change, naming the name and a file."""
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_add_flag", table_migration("one"))
    write_migration(folder, "2024_02_01_000000_add_flag", table_migration("two"))

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    assert "duplicate migration name 'add_flag'" in result.stderr
    assert "2024_01_01_000000_add_flag.py" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert table_names(engine) <= {"migrations"}

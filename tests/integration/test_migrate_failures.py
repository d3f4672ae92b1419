"""What happens when a migration fails or a file is wrong, on every database:
one clear line naming the culprit, exit code 1, and a database left as the
documented guarantees say. The failure cases M01, M03, M05 and M06 are in
``tests/cases``."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import (
    migrations_recorded,
    rows,
    run_cli,
    status_line,
    table_migration,
    table_names,
    write_migration,
)


def test_python_error_in_up_names_the_file_and_line(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    path = write_migration(
        tmp_path / "migrations",
        "2024_01_01_000000_oops",
        """
        from conveyor import Migration

        class Oops(Migration):
            def up(self):
                self.db.execute("CREATE TABLE oops (id INTEGER PRIMARY KEY)")
                raise ValueError("bad data in row 7")

            def down(self):
                pass
    """,
    )

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: {path}:6: up() failed: ValueError: bad data in row 7"
    )
    assert migrations_recorded(engine) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "import no_such_module_here\n",
            ":1: cannot import: ModuleNotFoundError: "
            "No module named 'no_such_module_here'",
        ),
        ("x = 1\n", ": defines no migration class (a subclass of conveyor.Migration)"),
        (
            "from conveyor import Migration\n"
            "class One(Migration):\n    pass\n"
            "class Two(Migration):\n    pass\n",
            ": defines 2 migration classes (One, Two); keep one per file",
        ),
    ],
    ids=["import-error", "no-class", "two-classes"],
)
def test_files_that_cannot_be_used_stop_before_any_change(
    tmp_path: Path, database_url: str, engine: sa.Engine, body: str, expected: str
) -> None:
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_create_good", table_migration("good"))
    bad = write_migration(folder, "2024_01_01_000001_bad", body)

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    assert result.stderr == f"error: {bad}{expected}\n"
    assert "good" not in table_names(engine)
    assert migrations_recorded(engine) == []


def test_rollback_refuses_a_migration_without_down(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_create_one", table_migration("one"))
    path = write_migration(
        folder,
        "2024_01_01_000001_only_up",
        """
        from conveyor import Migration

        class OnlyUp(Migration):
            def up(self):
                self.db.execute("CREATE TABLE only_up (id INTEGER PRIMARY KEY)")
    """,
    )
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    result = run_cli(["migrate", "rollback"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {path}: OnlyUp has no down(); nothing was rolled back\n"
    )
    assert len(migrations_recorded(engine)) == 2


def test_a_failed_run_records_each_migration_before_the_failure(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """Every migration that ran before the failing one keeps its row, in file
    order, in the run's batch, with its checksum. (On PostgreSQL those rows
    are written together just before the run commits.)"""
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_create_one", table_migration("one"))
    assert run_cli(["migrate"], cwd=tmp_path, database_url=database_url).exit_code == 0
    for index, table in enumerate(["two", "three", "four"], start=1):
        name = f"2024_01_01_00000{index}_create_{table}"
        write_migration(folder, name, table_migration(table))
    write_migration(
        folder,
        "2024_01_01_000004_broken",
        """
        from conveyor import Migration

        class Broken(Migration):
            def up(self):
                raise RuntimeError("stop here")
    """,
    )

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    recorded = rows(engine, "migrations")
    assert [(row["migration"][18:], row["batch"]) for row in recorded] == [
        ("create_one", 1),
        ("create_two", 2),
        ("create_three", 2),
        ("create_four", 2),
    ]
    assert all(len(row["checksum"]) == 64 for row in recorded)
    assert {"one", "two", "three", "four"} <= table_names(engine)
    status = run_cli(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    assert "file edited" not in status.output
    assert "Ran" not in status_line(status.stdout, "_broken")


def test_a_migrations_table_of_another_shape_is_refused(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """CodeIgniter 3 keeps a one-row ``version`` table named ``migrations``."""
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE migrations (version BIGINT NOT NULL)"))
        connection.execute(sa.text("INSERT INTO migrations VALUES (20240101000000)"))
    write_migration(
        tmp_path / "migrations", "2024_01_01_000000_create_one", table_migration("one")
    )

    for command in (["migrate"], ["migrate", "status"], ["migrate", "rollback"]):
        result = run_cli(command, cwd=tmp_path, database_url=database_url)
        assert result.exit_code == 1, command
        assert result.stderr.startswith(
            "error: table 'migrations' exists but is not a Conveyor migrations table"
        )
        assert "[migrations] table" in result.stderr
    assert "one" not in table_names(engine)

    (tmp_path / "conveyor.toml").write_text('[migrations]\ntable = "schema_log"\n')
    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert migrations_recorded(engine, "schema_log") == ["2024_01_01_000000_create_one"]

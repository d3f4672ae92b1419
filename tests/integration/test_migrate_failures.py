"""What happens when a migration fails or a file is wrong, on every database:
one clear line naming the culprit, exit code 1, and a database left as the
documented guarantees say."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import table_names
from helpers import run_cli, table_migration, write_migration

WIDGETS_BROKEN = """
    from conveyor import Migration

    class AddWidgets(Migration):
        def up(self):
            self.db.execute("CREATE TABLE widgets (id INTEGER PRIMARY KEY)")
            self.db.execute("INSERT INTO no_such_table VALUES (1)")

        def down(self):
            self.db.execute("DROP TABLE widgets")
"""

WIDGETS_FIXED = """
    from conveyor import Migration

    class AddWidgets(Migration):
        def up(self):
            if self.dialect == "mysql":
                # MySQL kept the table from the failed run; see the error.
                self.db.execute("DROP TABLE IF EXISTS widgets")
            self.db.execute("CREATE TABLE widgets (id INTEGER PRIMARY KEY)")
            self.db.execute("INSERT INTO widgets VALUES (1)")

        def down(self):
            self.db.execute("DROP TABLE widgets")
"""


def recorded(engine: sa.Engine, table: str = "migrations") -> list[str]:
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(table):
            return []
        query = sa.text(f"SELECT migration FROM {table} ORDER BY id")
        return [row[0] for row in connection.execute(query)]


def status_line(result_stdout: str, name: str) -> str:
    return next(line for line in result_stdout.splitlines() if name in line)


def test_half_applied_migration_is_never_recorded(
    tmp_path: Path, database_url: str, engine: sa.Engine, database_name: str
) -> None:
    """Case M01 on every database."""
    folder = tmp_path / "migrations"
    path = write_migration(folder, "2024_01_01_000001_add_widgets", WIDGETS_BROKEN)

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    error = result.stderr.strip()
    assert error.startswith(f"error: {path}:6: up() failed:")
    assert "no_such_table" in error
    assert len(error.splitlines()) == 1
    assert "Traceback" not in result.output
    assert recorded(engine) == []

    status = run_cli(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    line = status_line(status.stdout, "add_widgets")
    if database_name == "mysql":
        assert "widgets" in table_names(engine)
        assert "1 earlier statement(s) of this migration were committed" in error
        assert "Failed" in line
        assert "no_such_table" in status.stdout
    else:
        assert "widgets" not in table_names(engine)
        assert "nothing of it was kept" in error
        assert "Pending" in line

    write_migration(folder, "2024_01_01_000001_add_widgets", WIDGETS_FIXED)
    again = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert again.exit_code == 0, again.output
    assert recorded(engine) == ["2024_01_01_000001_add_widgets"]
    status = run_cli(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    assert "Ran" in status_line(status.stdout, "add_widgets")
    assert "Failed" not in status.stdout


def test_a_failure_stops_the_run_and_keeps_earlier_migrations(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_create_first", table_migration("first"))
    write_migration(folder, "2024_01_01_000001_add_widgets", WIDGETS_BROKEN)
    write_migration(folder, "2024_01_01_000002_create_third", table_migration("third"))

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    assert "add_widgets" in result.stderr
    assert recorded(engine) == ["2024_01_01_000000_create_first"]
    assert "first" in table_names(engine)
    assert "third" not in table_names(engine)


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
    assert recorded(engine) == []


def test_same_timestamp_files_both_run_in_full_name_order(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """Case M03: equal timestamps, equal class names, separate namespaces."""
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_05_01_120000_b", table_migration("bee", "Same"))
    write_migration(folder, "2024_05_01_120000_a", table_migration("ay", "Same"))

    assert run_cli(["migrate"], cwd=tmp_path, database_url=database_url).exit_code == 0
    assert recorded(engine) == ["2024_05_01_120000_a", "2024_05_01_120000_b"]

    result = run_cli(["migrate", "rollback"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert recorded(engine) == []
    assert not {"ay", "bee"} & table_names(engine)

    assert run_cli(["migrate"], cwd=tmp_path, database_url=database_url).exit_code == 0
    assert {"ay", "bee"} <= table_names(engine)


def test_duplicate_migration_names_are_refused(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_add_flag", table_migration("one"))
    write_migration(folder, "2024_02_01_000000_add_flag", table_migration("two"))

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    assert "duplicate migration name 'add_flag'" in result.stderr
    assert "2024_01_01_000000_add_flag.py" in result.stderr
    assert table_names(engine) <= {"migrations"}


def test_broken_and_stray_files(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """Case M05: a syntax error is named with its line by every command, and
    badly named files are skipped with a warning."""
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_create_good", table_migration("good"))
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    broken = write_migration(
        folder,
        "2024_06_01_000000_broken",
        """
        from conveyor import Migration

        class Broken(Migration):
            def up(self)
                pass
    """,
    )
    (folder / "notes.txt").write_text("not a migration")
    write_migration(folder, "2024_bad", table_migration("bad"))

    status = run_cli(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    assert status.exit_code == 0
    assert "Ran" in status_line(status.stdout, "create_good")
    assert "Pending" in status_line(status.stdout, "broken")
    assert f"{broken}:4: syntax error" in status.stderr
    assert "notes.txt: skipped" in status.stderr
    assert "2024_bad.py: skipped" in status.stderr

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 1
    assert f"{broken}:4: syntax error" in result.stderr
    assert recorded(engine) == ["2024_01_01_000000_create_good"]

    result = run_cli(["migrate", "rollback"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert f"{broken}:4: syntax error" in result.stderr
    assert recorded(engine) == []


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
    assert recorded(engine) == []


def test_rollback_refuses_when_a_recorded_file_is_gone(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """Case M06: the batch is never left half undone."""
    folder = tmp_path / "migrations"
    for index, table in enumerate(["one", "two", "three"]):
        write_migration(
            folder, f"2024_01_01_00000{index}_create_{table}", table_migration(table)
        )
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    (folder / "2024_01_01_000001_create_two.py").unlink()

    status = run_cli(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    assert "Ran, file missing" in status_line(status.stdout, "create_two")

    result = run_cli(["migrate", "rollback"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 1
    assert (
        "2024_01_01_000001_create_two.py: recorded as applied but the file is gone"
        in result.stderr
    )
    assert len(recorded(engine)) == 3
    assert {"one", "two", "three"} <= table_names(engine)

    forced = run_cli(
        ["migrate", "rollback", "--force"], cwd=tmp_path, database_url=database_url
    )
    assert forced.exit_code == 0, forced.output
    assert "FORGOTTEN" in forced.stdout
    assert recorded(engine) == []
    # down() of the missing file could not run, so its table stays.
    assert table_names(engine) == {"two", "migrations"}


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
    assert len(recorded(engine)) == 2


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
    assert recorded(engine, "schema_log") == ["2024_01_01_000000_create_one"]

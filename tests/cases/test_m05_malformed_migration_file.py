"""Case M05: one malformed migration file.

A file with a Python syntax error is named with its line by every command;
``status`` still lists the good migrations; ``migrate`` records nothing of
the broken file and, since every file is checked before the first change,
applies nothing in that run (what earlier runs applied stays recorded);
files not named like migrations are skipped with a warning, never run and
never a crash. A statement left unterminated fails its migration, which is
never recorded as applied."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from helpers import (
    migrations_recorded,
    run_cli,
    status_line,
    table_migration,
    table_names,
    write_migration,
    write_table_migrations,
)

BROKEN = """
    from conveyor import Migration

    class Broken(Migration):
        def up(self)
            pass
"""


def test_broken_and_stray_files(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """A syntax error is named with its line by status, migrate and
    rollback; the pending good file before it is not applied by the run that
    stops on it; badly named files are skipped with a warning by each
    command and never run."""
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_create_good", table_migration("good"))
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    write_migration(folder, "2024_05_01_000000_create_later", table_migration("later"))
    broken = write_migration(folder, "2024_06_01_000000_broken", BROKEN)
    (folder / "notes.txt").write_text("not a migration")
    write_migration(folder, "2024_bad", table_migration("bad"))

    status = run_cli(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    assert status.exit_code == 0, status.output
    assert "Ran" in status_line(status.stdout, "create_good")
    assert "Pending" in status_line(status.stdout, "create_later")
    assert "Pending" in status_line(status.stdout, "broken")
    assert "2024_bad" not in status.stdout
    assert f"{broken}:4: syntax error" in status.stderr
    assert "notes.txt: skipped" in status.stderr
    assert "2024_bad.py: skipped" in status.stderr

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: {broken}:4: syntax error: expected ':'"]
    assert "notes.txt: skipped" in result.stderr
    assert "2024_bad.py: skipped" in result.stderr
    assert "Traceback" not in result.output
    assert migrations_recorded(engine) == ["2024_01_01_000000_create_good"]
    assert not {"later", "bad"} & table_names(engine)

    result = run_cli(["migrate", "rollback"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert f"{broken}:4: syntax error" in result.stderr
    assert "notes.txt: skipped" in result.stderr
    assert "2024_bad.py: skipped" in result.stderr
    assert migrations_recorded(engine) == []
    assert table_names(engine) == {"migrations"}


def test_skipped_files_are_named_by_migrate(tmp_path: Path, database_url: str) -> None:
    """A stray file beside good migrations: migrate runs the migrations and
    names the stray file as skipped."""
    write_table_migrations(tmp_path, ["alpha"])
    (tmp_path / "migrations" / "notes.txt").write_text("todo")

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0
    assert "notes.txt: skipped, not named like a migration" in result.stderr


UNTERMINATED = """
    from conveyor import Migration

    class Notes(Migration):
        def up(self):
            self.db.execute_script(
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(20));\\n"
                "INSERT INTO notes VALUES (1, 'a;b');\\n"
                "INSERT INTO notes VALUES (2, 'never closed);\\n"
            )

        def down(self):
            self.db.execute("DROP TABLE notes")
"""


def test_an_unterminated_statement_fails_and_is_never_recorded(
    tmp_path: Path, database_url: str, engine: sa.Engine, database_name: str
) -> None:
    """A script whose last statement never closes its string fails the
    migration, naming the file, line and statement; it is not recorded;
    status shows it pending (or failed, on MySQL, where the CREATE before it
    stayed committed), never ran."""
    path = write_migration(
        tmp_path / "migrations", "2024_01_01_000000_notes", UNTERMINATED
    )

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith(f"error: {path}:5: up() failed: ")
    assert "[in: INSERT INTO notes VALUES (2, 'never closed)]" in error
    assert migrations_recorded(engine) == []
    status = run_cli(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    line = status_line(status.stdout, "_notes")
    assert "Ran" not in line
    if database_name == "mysql":
        assert "1 earlier statement(s) of this migration were committed" in error
        assert "Failed" in line
    else:
        assert "nothing of it was kept" in error
        assert "Pending" in line
        assert "notes" not in table_names(engine)

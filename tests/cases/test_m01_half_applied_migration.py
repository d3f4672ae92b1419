"""Case M01: a migration half applied on MySQL.

MySQL and MariaDB commit DDL at once, so a migration can be half applied;
the product never records a migration whose ``up()`` did not finish, the
error names the file and what stayed committed, and ``status`` shows it
failed or unfinished rather than plain pending. On PostgreSQL and SQLite the
whole file rolls back. The same holds when ``conveyor migrate`` is killed
mid-migration, on MySQL even while a slow ALTER is under way."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import (
    SLOW_MIGRATION,
    migrations_recorded,
    run_cli,
    run_process,
    spawn_cli,
    status_line,
    table_migration,
    table_names,
    wait_until,
    write_migration,
)

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


def test_half_applied_migration_is_never_recorded(
    tmp_path: Path, database_url: str, engine: sa.Engine, database_name: str
) -> None:
    """``up()`` creates ``widgets``, then a statement fails: the error names
    the file and line; nothing is recorded; PostgreSQL and SQLite keep
    nothing of it and show it pending, MySQL kept the table, says so, and
    shows it failed; the fixed file then runs and is recorded."""
    folder = tmp_path / "migrations"
    path = write_migration(folder, "2024_01_01_000001_add_widgets", WIDGETS_BROKEN)

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    error = result.stderr.strip()
    assert error.startswith(f"error: {path}:6: up() failed:")
    assert "no_such_table" in error
    assert len(error.splitlines()) == 1
    assert "Traceback" not in result.output
    assert migrations_recorded(engine) == []

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
    assert migrations_recorded(engine) == ["2024_01_01_000001_add_widgets"]
    status = run_cli(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    assert "Ran" in status_line(status.stdout, "add_widgets")
    assert "Failed" not in status.stdout


def test_a_failure_stops_the_run_and_keeps_earlier_migrations(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """The failing file stops the run: the migration before it stays
    recorded, the one after it never runs."""
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_create_first", table_migration("first"))
    write_migration(folder, "2024_01_01_000001_add_widgets", WIDGETS_BROKEN)
    write_migration(folder, "2024_01_01_000002_create_third", table_migration("third"))

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1
    assert "add_widgets" in result.stderr
    assert migrations_recorded(engine) == ["2024_01_01_000000_create_first"]
    assert "first" in table_names(engine)
    assert "third" not in table_names(engine)


def test_a_killed_run_never_records_its_migration(
    tmp_path: Path, database_url: str, engine: sa.Engine, database_name: str
) -> None:
    """The process dies (SIGKILL) in the middle of a migration: nothing is
    recorded; PostgreSQL and SQLite kept nothing and show it pending; MySQL
    shows it started and unfinished."""
    write_migration(tmp_path / "migrations", "2024_01_01_000000_slow", SLOW_MIGRATION)
    runner = spawn_cli(["migrate"], tmp_path, database_url)
    try:
        if database_name == "mysql":
            wait_until(
                lambda: "slow_marker" in table_names(engine), 20, "the table exists"
            )
        else:
            time.sleep(2.0)  # the table is invisible until commit; give it time
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.communicate()

    status = run_process(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    assert status.returncode == 0, status.stderr
    line = status_line(status.stdout, "_slow")
    assert migrations_recorded(engine) == []
    if database_name == "mysql":
        assert "Started, unfinished" in line
        assert "never finished" in status.stdout
    else:
        assert "Pending" in line
        assert "slow_marker" not in table_names(engine)


ADD_FLAG = """
    from conveyor import Migration

    class AddFlagToItems(Migration):
        def up(self):
            self.db.execute("INSERT INTO items (id, name) VALUES (1, 'kept')")
            self.db.execute("ALTER TABLE items ADD COLUMN flag INTEGER")

        def down(self):
            self.db.execute("ALTER TABLE items DROP COLUMN flag")
"""


@pytest.mark.databases("mysql")
def test_a_run_killed_during_a_slow_alter_is_never_recorded(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """``conveyor migrate`` is killed while its ALTER TABLE waits (another
    session holds the table, as a long report would): whatever the server
    then does with the ALTER, the migration is not recorded and ``status``
    shows it started and unfinished, never ran or plain pending."""
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_create_items", table_migration("items"))
    assert run_cli(["migrate"], cwd=tmp_path, database_url=database_url).exit_code == 0
    write_migration(folder, "2024_01_01_000001_add_flag_to_items", ADD_FLAG)

    with engine.connect() as reader, engine.connect() as watcher:
        reader.begin()
        reader.execute(sa.text("SELECT * FROM items")).all()  # holds the table
        runner = spawn_cli(["migrate"], tmp_path, database_url)
        try:
            waiting = sa.text(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE DB = DATABASE() AND INFO LIKE 'ALTER TABLE items%'"
            )
            wait_until(
                lambda: watcher.execute(waiting).scalar(), 20, "the ALTER is waiting"
            )
        finally:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.communicate()
        reader.rollback()

    status = run_process(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    assert status.returncode == 0, status.stderr
    assert migrations_recorded(engine) == ["2024_01_01_000000_create_items"]
    line = status_line(status.stdout, "add_flag_to_items")
    assert "Started, unfinished" in line
    assert "never finished" in line
    assert "Ran" in status_line(status.stdout, "create_items")

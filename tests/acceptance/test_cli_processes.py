"""The CLI as separate processes: two deploy hosts migrating at once, a run
killed mid-migration, and errors as a user sees them in a terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import table_names
from helpers import run_cli, run_process, table_migration, write_migration

LOCK_RACE_ROUNDS = int(os.environ.get("CONVEYOR_TEST_LOCK_RACE_ROUNDS", "20"))

SEED_SETTINGS = """
    import time
    from conveyor import Migration

    class SeedSettings(Migration):
        def up(self):
            # Not idempotent on purpose: running twice would leave two rows.
            self.db.execute("INSERT INTO settings (name) VALUES ('seeded')")
            time.sleep(0.2)

        def down(self):
            self.db.execute("DELETE FROM settings")
"""

SETTINGS_TABLE = """
    import sqlalchemy as sa
    from conveyor import Migration

    class CreateSettings(Migration):
        def up(self):
            self.schema.create_table(
                "settings",
                sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                sa.Column("name", sa.String(50)),
            )

        def down(self):
            self.schema.drop_table("settings")
"""


def spawn(args: list[str], cwd: Path, database_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args, "--database", database_url],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_two_migrate_runs_at_once_apply_each_migration_once(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """Case M02, repeated: one run applies all three, the other waits for the
    lock, re-reads the table and finds nothing to do."""
    folder = tmp_path / "migrations"
    write_migration(folder, "2024_01_01_000000_create_settings", SETTINGS_TABLE)
    write_migration(folder, "2024_01_01_000001_seed_settings", SEED_SETTINGS)
    write_migration(folder, "2024_01_01_000002_create_extra", table_migration("extra"))

    for round_number in range(LOCK_RACE_ROUNDS):
        first = spawn(["migrate"], tmp_path, database_url)
        second = spawn(["migrate"], tmp_path, database_url)
        outputs = [process.communicate(timeout=120) for process in (first, second)]

        assert [first.returncode, second.returncode] == [0, 0], outputs
        stdouts = sorted((out for out, _ in outputs), key=lambda out: out.count("DONE"))
        assert stdouts[0].strip() == "Nothing to migrate.", (round_number, stdouts)
        assert stdouts[1].count("DONE") == 3, (round_number, stdouts)
        with engine.connect() as connection:
            seeds = connection.execute(sa.text("SELECT COUNT(*) FROM settings"))
            assert seeds.scalar() == 1
            rows = connection.execute(sa.text("SELECT COUNT(*) FROM migrations"))
            assert rows.scalar() == 3

        reset = run_cli(["migrate", "reset"], cwd=tmp_path, database_url=database_url)
        assert reset.exit_code == 0, reset.output


SLOW_MIGRATION = """
    import time
    from conveyor import Migration

    class Slow(Migration):
        def up(self):
            self.db.execute("CREATE TABLE slow_marker (id INTEGER PRIMARY KEY)")
            time.sleep(60)

        def down(self):
            self.db.execute("DROP TABLE slow_marker")
"""


def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_a_second_run_gives_up_after_the_lock_timeout(
    tmp_path: Path, database_url: str
) -> None:
    write_migration(tmp_path / "migrations", "2024_01_01_000000_slow", SLOW_MIGRATION)
    holder = spawn(["migrate"], tmp_path, database_url)
    try:
        time.sleep(1.5)  # let the holder take the lock and start sleeping
        started = time.monotonic()
        waiter = run_process(
            ["migrate", "--lock-timeout", "1"], cwd=tmp_path, database_url=database_url
        )
        waited = time.monotonic() - started
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate()

    assert waiter.returncode == 1
    assert waiter.stderr == (
        "error: another migration run held the lock for more than 1 s; "
        "try again, or raise --lock-timeout\n"
    )
    assert waited >= 1.0


def test_a_killed_run_never_records_its_migration(
    tmp_path: Path, database_url: str, engine: sa.Engine, database_name: str
) -> None:
    """Case M01, variant: the process dies in the middle of a migration."""
    write_migration(tmp_path / "migrations", "2024_01_01_000000_slow", SLOW_MIGRATION)
    runner = spawn(["migrate"], tmp_path, database_url)
    try:
        if database_name == "mysql":
            wait_until(lambda: "slow_marker" in table_names(engine))
        else:
            time.sleep(2.0)  # the table is invisible until commit; give it time
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.communicate()

    status = run_process(["migrate", "status"], cwd=tmp_path, database_url=database_url)
    assert status.returncode == 0, status.stderr
    line = next(line for line in status.stdout.splitlines() if "_slow" in line)
    with engine.connect() as connection:
        if sa.inspect(connection).has_table("migrations"):
            recorded = connection.execute(sa.text("SELECT COUNT(*) FROM migrations"))
            assert recorded.scalar() == 0
    if database_name == "mysql":
        assert "Started, unfinished" in line
        assert "never finished" in status.stdout
    else:
        assert "Pending" in line
        assert "slow_marker" not in table_names(engine)


@pytest.mark.databases("sqlite")
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, database_url: str
) -> None:
    cases = [
        (
            ["migrate", "--database", "postgresql://nobody@127.0.0.1:1/none"],
            "error: cannot connect to postgresql+psycopg://nobody@127.0.0.1:1/none: ",
        ),
        (
            ["migrate", "--database", "nonsense"],
            "error: invalid database URL 'nonsense'",
        ),
        (
            ["migrate", "--database", "oracle://u@h/db"],
            "error: unsupported database URL 'oracle://u@h/db'",
        ),
        (["migrate", "--config", "missing.toml"], "error: missing.toml: settings file"),
        (["migrate", "make", "BadName"], "error: migration name 'BadName' must be"),
    ]
    for args, expected in cases:
        result = subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, args
        assert result.stderr.startswith(expected), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.databases("sqlite")
def test_verbose_shows_the_traceback(tmp_path: Path, database_url: str) -> None:
    result = run_process(
        ["migrate", "-v", "--database", "postgresql://nobody@127.0.0.1:1/none"],
        cwd=tmp_path,
    )

    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: cannot connect")


@pytest.mark.databases("sqlite")
def test_unknown_option_and_bad_settings_file(
    tmp_path: Path, database_url: str
) -> None:
    unknown = run_process(["migrate", "--bogus"], cwd=tmp_path)
    assert unknown.returncode == 2
    assert "No such option '--bogus'" in unknown.stderr

    (tmp_path / "conveyor.toml").write_text('database_url = "sqlite:///x.db"\nbad =\n')
    bad = run_process(["migrate", "status"], cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ")
    assert "conveyor.toml: not valid TOML" in bad.stderr
    assert "line 2" in bad.stderr

    (tmp_path / "conveyor.toml").write_text('databse_url = "sqlite:///x.db"\n')
    typo = run_process(["migrate", "status"], cwd=tmp_path)
    assert typo.returncode == 1
    assert "unknown key 'databse_url'" in typo.stderr

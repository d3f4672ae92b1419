"""Case M02: two ``conveyor migrate`` processes at once.

Two deploy hosts migrate together: one applies every pending migration, the
other waits for the migration lock (an advisory lock on PostgreSQL,
``GET_LOCK`` on MySQL/MariaDB, a write transaction on SQLite), reads the
``migrations`` table again once it has the lock, and has nothing to do; both
exit 0 and a non-idempotent seed runs once. A run that cannot get the lock
within ``--lock-timeout`` gives up in one line."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import (
    SLOW_MIGRATION,
    run_cli,
    run_process,
    spawn_cli,
    table_migration,
    write_migration,
)

LOCK_RACE_ROUNDS = int(os.environ.get("CONVEYOR_TEST_LOCK_RACE_ROUNDS", "20"))

SEED_SETTINGS = """
    import time
    from conveyor import Migration

    class SeedSettings(Migration):
        def up(self):
            # Not idempotent on purpose: running twice would leave two rows.
            self.db.execute("INSERT INTO settings (name) VALUES ('seeded')")
            time.sleep({seconds})

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


def write_three(root: Path, seed_seconds: float) -> None:
    """Three pending migrations; the second seeds ``settings`` and then
    sleeps ``seed_seconds``."""
    folder = root / "migrations"
    write_migration(folder, "2024_01_01_000000_create_settings", SETTINGS_TABLE)
    write_migration(
        folder,
        "2024_01_01_000001_seed_settings",
        SEED_SETTINGS.replace("{seconds}", str(seed_seconds)),
    )
    write_migration(folder, "2024_01_01_000002_create_extra", table_migration("extra"))


def counts(engine: sa.Engine) -> tuple[int, int]:
    """Rows of ``settings`` and of ``migrations``."""
    with engine.connect() as connection:
        seeds = connection.execute(sa.text("SELECT COUNT(*) FROM settings")).scalar()
        applied = connection.execute(sa.text("SELECT COUNT(*) FROM migrations"))
        return int(seeds or 0), int(applied.scalar() or 0)


@pytest.mark.slow
def test_two_migrate_runs_at_once_apply_each_migration_once(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """Repeated 20 times: two runs started together; one applies all three,
    the other says there is nothing to migrate; both exit 0; one seed row."""
    write_three(tmp_path, 0.2)

    for round_number in range(LOCK_RACE_ROUNDS):
        first = spawn_cli(["migrate"], tmp_path, database_url)
        second = spawn_cli(["migrate"], tmp_path, database_url)
        outputs = [process.communicate(timeout=120) for process in (first, second)]

        assert [first.returncode, second.returncode] == [0, 0], outputs
        stdouts = sorted((out for out, _ in outputs), key=lambda out: out.count("DONE"))
        assert stdouts[0].strip() == "Nothing to migrate.", (round_number, stdouts)
        assert stdouts[1].count("DONE") == 3, (round_number, stdouts)
        assert counts(engine) == (1, 3), round_number

        reset = run_cli(["migrate", "reset"], cwd=tmp_path, database_url=database_url)
        assert reset.exit_code == 0, reset.output


def test_a_run_started_during_another_waits_then_finds_nothing_to_do(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """A second run started while the first is inside its 3 s seed waits
    for it (it is still running when the first is half-way), then exits 0
    with nothing to do; the seed ran once."""
    write_three(tmp_path, 3)
    first = spawn_cli(["migrate"], tmp_path, database_url)
    time.sleep(1.0)  # the first holds the lock and sleeps in the seed
    second = spawn_cli(["migrate"], tmp_path, database_url)
    time.sleep(1.0)

    assert first.poll() is None
    assert second.poll() is None, "the second run did not wait for the lock"
    first_out, first_err = first.communicate(timeout=60)
    second_out, second_err = second.communicate(timeout=60)

    assert first.returncode == 0, first_err
    assert first_out.count("DONE") == 3, first_out
    assert second.returncode == 0, second_err
    assert second_out.strip() == "Nothing to migrate."
    assert counts(engine) == (1, 3)


def test_a_second_run_gives_up_after_the_lock_timeout(
    tmp_path: Path, database_url: str
) -> None:
    """While a run holds the lock, ``migrate --lock-timeout 1`` waits about
    a second, then exits 1 with one line saying why."""
    write_migration(tmp_path / "migrations", "2024_01_01_000000_slow", SLOW_MIGRATION)
    holder = spawn_cli(["migrate"], tmp_path, database_url)
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

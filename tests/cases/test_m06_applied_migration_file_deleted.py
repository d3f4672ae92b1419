"""Case M06: an applied migration whose file was deleted.

``status`` shows it as applied with its file missing; ``rollback`` (and
``reset`` and ``refresh``, which roll back too) stop before changing
anything and name the missing file; ``--force`` forgets its record without
running its ``down()``. The batch is never left half undone."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import (
    migrations_recorded,
    run_cli,
    status_line,
    table_names,
    write_table_migrations,
)

MISSING = "2024_01_01_000001_create_two.py"


@pytest.fixture
def middle_file_gone(tmp_path: Path, database_url: str) -> Path:
    """Three migrations applied as batch 1, then the middle file deleted;
    the application folder."""
    folder = write_table_migrations(tmp_path, ["one", "two", "three"])
    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    (folder / MISSING).unlink()
    return tmp_path


def test_rollback_refuses_when_a_recorded_file_is_gone(
    middle_file_gone: Path, database_url: str, engine: sa.Engine
) -> None:
    """Status shows the entry as ran with its file missing; rollback stops
    before undoing anything and names the file; ``--force`` forgets it and
    undoes the rest."""
    root = middle_file_gone

    status = run_cli(["migrate", "status"], cwd=root, database_url=database_url)
    assert status.exit_code == 0, status.output
    assert "Ran, file missing" in status_line(status.stdout, "create_two")
    assert "Ran" in status_line(status.stdout, "create_one")
    assert "Ran" in status_line(status.stdout, "create_three")

    result = run_cli(["migrate", "rollback"], cwd=root, database_url=database_url)
    assert result.exit_code == 1
    assert (
        f"{MISSING}: recorded as applied but the file is gone; nothing was rolled back"
        in result.stderr
    )
    assert "--force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
    assert len(migrations_recorded(engine)) == 3
    assert {"one", "two", "three"} <= table_names(engine)

    forced = run_cli(
        ["migrate", "rollback", "--force"], cwd=root, database_url=database_url
    )
    assert forced.exit_code == 0, forced.output
    assert "FORGOTTEN" in status_line(forced.stdout, "create_two")
    assert migrations_recorded(engine) == []
    # down() of the missing file could not run, so its table stays.
    assert table_names(engine) == {"two", "migrations"}


@pytest.mark.parametrize("command", ["reset", "refresh"])
def test_reset_and_refresh_refuse_too(
    middle_file_gone: Path, database_url: str, engine: sa.Engine, command: str
) -> None:
    """``reset`` and ``refresh`` would roll the missing file back as well:
    they stop the same way, with nothing undone or re-run."""
    result = run_cli(
        ["migrate", command], cwd=middle_file_gone, database_url=database_url
    )

    assert result.exit_code == 1
    assert f"{MISSING}: recorded as applied but the file is gone" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert len(migrations_recorded(engine)) == 3
    assert {"one", "two", "three"} <= table_names(engine)

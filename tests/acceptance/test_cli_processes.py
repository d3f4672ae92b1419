"""The CLI as separate processes: errors as a user sees them in a terminal.

Two deploy hosts migrating at once (M02) and a run killed mid-migration
(M01) are in ``tests/cases``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_process


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

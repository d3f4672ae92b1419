"""Small tools for tests: migration files from strings, and the CLI run the
way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from conveyor.cli import main


def write_migration(folder: Path, name: str, body: str) -> Path:
    """Write ``folder/name.py`` with ``body`` dedented; ``name`` is the full
    stem, e.g. ``2024_01_01_000000_create_widgets``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def table_migration(table: str, class_name: str = "M") -> str:
    """A migration creating ``table`` with an id and a name column."""
    return f"""
        import sqlalchemy as sa
        from conveyor import Migration

        class {class_name}(Migration):
            def up(self):
                self.schema.create_table(
                    "{table}",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(50)),
                )

            def down(self):
                self.schema.drop_table("{table}")
    """


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    args: list[str],
    *,
    cwd: Path,
    database_url: str | None = None,
    input: str | None = None,
) -> Outcome:
    """Run ``conveyor ARGS`` in-process from ``cwd``, as a user would."""
    if database_url is not None:
        args = [*args, "--database", database_url]
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, args, input=input, catch_exceptions=False)
    finally:
        os.chdir(old)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def run_process(
    args: list[str], *, cwd: Path, database_url: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m conveyor ARGS`` in a child process."""
    if database_url is not None:
        args = [*args, "--database", database_url]
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

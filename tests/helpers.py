"""Small tools for tests: migration and job files from strings, table rows,
and the CLI run the way a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from conveyor.cli import main


def write_migration(folder: Path, name: str, body: str) -> Path:
    """Write ``folder/name.py`` with ``body`` dedented; ``name`` is the full
    stem, e.g. ``2024_01_01_000000_create_widgets``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def write_job(root: Path, name: str, body: str) -> Path:
    """Write ``root/jobs/name.py`` with ``body`` dedented: a job module of the
    application folder ``root``, imported by the worker's child process."""
    folder = root / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def rows(engine: sa.Engine, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` as a dict, by id; none when it does not exist."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(table):
            return []
        result = connection.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))
        return [dict(row) for row in result.mappings()]


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


#: The top of a job module: ``record(self, **fields)`` appends one JSON line
#: (the job's class, id, queue, attempt and time, and ``fields``) to
#: ``runs.jsonl`` in the application folder, which :func:`recorded` reads.
JOB_PREAMBLE = """
import json
import time
from pathlib import Path

from conveyor import Job

RUNS = Path(__file__).resolve().parents[1] / "runs.jsonl"


def record(job, **fields):
    context = getattr(job, "context", None)
    entry = {
        "job": type(job).__name__,
        "id": getattr(context, "id", None),
        "queue": getattr(context, "queue", None),
        "attempt": getattr(context, "attempt", None),
        "at": time.time(),
        **fields,
    }
    with RUNS.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\\n")
"""

#: ``Record`` records its data; ``Boom`` records it, then raises.
STANDARD_JOBS = """
class Record(Job):
    def handle(self, data):
        record(self, data=data)


class Boom(Job):
    def handle(self, data):
        record(self, data=data)
        raise ValueError(f"boom {data}")
"""


def write_jobs(root: Path, name: str, body: str = STANDARD_JOBS) -> Path:
    """A job module ``jobs/name.py`` of :data:`JOB_PREAMBLE` and ``body``."""
    return write_job(root, name, JOB_PREAMBLE + textwrap.dedent(body))


def recorded(root: Path) -> list[dict[str, Any]]:
    """What the jobs of :data:`JOB_PREAMBLE` recorded, in order."""
    path = root / "runs.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def work(root: Path, database_url: str, *options: str) -> Outcome:
    """``conveyor queue work --stop-when-empty --sleep 0 OPTIONS`` in-process
    from the application folder ``root``."""
    return run_cli(
        ["queue", "work", "--stop-when-empty", "--sleep", "0", *options],
        cwd=root,
        database_url=database_url,
    )

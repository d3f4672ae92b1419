"""The jobs of the fault campaign, and the table where their runs are kept.

``bench/chaos.py`` copies this file into the ``jobs/`` folder of the
application it generates, so the workers' job processes import it from there;
the campaign itself imports it from ``bench/`` for the table and the engine.

Every run of a job inserts one row in ``chaos_runs`` as the first thing it
does and marks that row finished as the last thing it does. The table, not a
worker's log, is the record of what ran: a worker killed with SIGKILL writes
no log line, but the row of the run it cut short stays, unfinished.

Recording must survive the faults the campaign causes (connections
terminated, the server restarted), or a fault would look like a lost or
repeated run. So each write is retried for a few seconds, and the insert is
keyed by a fresh run id: if its commit went through but the answer was lost,
the retry hits the key instead of recording the run twice.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from conveyor import Job

RUNS_TABLE = "chaos_runs"
HOOKS_TABLE = "chaos_failed_hooks"
#: Seconds one write may keep trying while the database is away. Two writes
#: plus the slowest job stay well under the workers' --timeout.
WRITE_PATIENCE = 4.0
#: application_name of every connection of the campaign's subjects on
#: PostgreSQL, so that terminating backends spares other users of the server.
APPLICATION_NAME = "conveyor-chaos"

metadata = sa.MetaData()
runs = sa.Table(
    RUNS_TABLE,
    metadata,
    sa.Column("run", sa.String(32), primary_key=True),
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("tag", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    # The worker is the parent of the process that runs the job.
    sa.Column("worker_pid", sa.Integer, nullable=False),
    sa.Column("child_pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    # When a delayed job was due (epoch seconds); NULL for the others.
    sa.Column("due_at", sa.Double, nullable=True),
    sa.Column("finished_at", sa.Double, nullable=True),
    # "ok", or "raised" for a run that ended in an exception.
    sa.Column("outcome", sa.String(8), nullable=True),
)
#: One row per call of a job's failed() hook, which must run once per job
#: that ends in failed_jobs.
hooks = sa.Table(
    HOOKS_TABLE,
    metadata,
    sa.Column("call", sa.String(32), primary_key=True),
    sa.Column("tag", sa.String(32), nullable=False),
    sa.Column("called_at", sa.Double, nullable=False),
)


def engine_for(url: str, *, pooled: bool = True, name: str = APPLICATION_NAME) -> Any:
    """An engine on ``url`` with the same drivers Conveyor picks for bare
    ``postgresql://`` and ``mysql://`` URLs."""
    parsed = sa.make_url(url)
    drivers = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}
    family = parsed.get_backend_name()
    if parsed.drivername in drivers:
        parsed = parsed.set(drivername=drivers[parsed.drivername])
    connect_args: dict[str, Any] = {}
    if family == "sqlite":
        connect_args["timeout"] = 30
    elif family == "postgresql":
        parsed = parsed.update_query_dict({"application_name": name})
    if not pooled:
        return sa.create_engine(parsed, connect_args=connect_args, poolclass=NullPool)
    # A pooled connection may have been terminated since its last use.
    return sa.create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)


class _Recorder:
    """The job process's connection to the runs table, opened on first use."""

    def __init__(self) -> None:
        self._engine: Any = None

    def write(self, statement: sa.Executable) -> None:
        deadline = time.monotonic() + WRITE_PATIENCE
        while True:
            try:
                with self._connect().begin() as connection:
                    connection.execute(statement)
                return
            except sa.exc.IntegrityError:
                return  # the insert had committed; only its answer was lost
            except (sa.exc.OperationalError, sa.exc.InterfaceError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)

    def _connect(self) -> Any:
        if self._engine is None:
            settings = Path(__file__).resolve().parent.parent / "chaos.json"
            url = json.loads(settings.read_text())["database_url"]
            self._engine = engine_for(url)
        return self._engine


_recorder = _Recorder()


class ChaosJob(Job):
    """Records its run around :meth:`work`."""

    def handle(self, data: dict[str, Any]) -> None:
        run = uuid.uuid4().hex
        _recorder.write(
            runs.insert().values(
                run=run,
                job_id=self.context.id,
                tag=data["tag"],
                kind=type(self).__name__,
                attempt=self.context.attempt,
                worker_pid=os.getppid(),
                child_pid=os.getpid(),
                started_at=time.time(),
                due_at=data.get("due"),
            )
        )
        try:
            self.work(data)
        except Exception:
            self._finish(run, "raised")
            raise
        self._finish(run, "ok")

    def work(self, data: dict[str, Any]) -> None:
        """What the job does between its two records."""

    def _finish(self, run: str, outcome: str) -> None:
        _recorder.write(
            runs.update()
            .where(runs.c.run == run)
            .values(finished_at=time.time(), outcome=outcome)
        )


class Instant(ChaosJob):
    """Does nothing: the queue's own overhead."""


class Slow(ChaosJob):
    """Sleeps ``data["seconds"]``, long enough to be caught by a kill."""

    def work(self, data: dict[str, Any]) -> None:
        time.sleep(data["seconds"])


class Flaky(ChaosJob):
    """Fails its first attempt and succeeds on the next."""

    def work(self, data: dict[str, Any]) -> None:
        if self.context.attempt == 1:
            raise RuntimeError("flaky: the first attempt fails")


class Doomed(ChaosJob):
    """Fails every attempt, so it must end in failed_jobs."""

    def work(self, data: dict[str, Any]) -> None:
        raise RuntimeError("doomed: every attempt fails")

    def failed(self, data: dict[str, Any], error: str) -> None:
        _recorder.write(
            hooks.insert().values(
                call=uuid.uuid4().hex, tag=data["tag"], called_at=time.time()
            )
        )

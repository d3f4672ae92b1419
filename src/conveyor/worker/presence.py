"""A worker's row in the workers table: who it is, what it runs, when it was
last heard of, and whether it was asked to stop (``queue restart``).

What the row names as the worker's ``current_job`` decides, when the worker
dies, which of its jobs counts an attempt and a crash (see
``conveyor.drivers.recovery``), so it is written with one rule: it names a
job only while no other job can start without the worker's say. That holds
for the job a claim of one hands out (the claim names it in its own
transaction), for the last job of a batch sent to the job process, and for
a job that has run longer than ``NAME_AFTER``: the job process stops its
batch after any job that ran ``BATCH_PAUSE_SECONDS``, and the worker names
the next job, or nothing, before it sends another batch. Otherwise it
names nothing. A write per job start would name every job exactly but cost
a transaction per job, which is what claiming ahead saves; this costs none
while fast jobs drain, one more write after a named slow job, and one per
suspect job (see ``prepare``).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time

import sqlalchemy as sa

from conveyor.drivers.base import ReservedJob
from conveyor.drivers.contention import retry_contention
from conveyor.drivers.database import DatabaseStore
from conveyor.worker.child import BATCH_PAUSE_SECONDS

log = logging.getLogger(__name__)

#: Rows silent for longer than this are removed by the next worker to start.
STALE_SECONDS = 24 * 3600
#: Seconds a job must have run, as the worker counts, before the worker
#: names it: well past ``BATCH_PAUSE_SECONDS``, so the job process is sure
#: to stop its batch after it.
NAME_AFTER = 5 * BATCH_PAUSE_SECONDS


def nameable(job: ReservedJob, ran_for: float, last_of_batch: bool) -> int | None:
    """The id a heartbeat may write as the running job's, or ``None``."""
    return job.id if last_of_batch or ran_for >= NAME_AFTER else None


class Presence:
    def __init__(self, store: DatabaseStore, queues: list[str]) -> None:
        self.store = store
        self.table = store.tables.workers
        self.id = secrets.token_hex(16)
        self.queues = queues
        self._last_beat = 0.0
        self._stop_requested = False
        #: What the row's current_job says, when ``named_sure``; not sure
        #: after a write that failed (its commit may have landed or not).
        self.named: int | None = None
        self.named_sure = True

    def noted(self, job_id: int | None) -> None:
        """The row's current_job was written (by a claim)."""
        self.named, self.named_sure = job_id, True

    def unsure(self) -> None:
        self.named_sure = False

    def prepare(self, batch: list[ReservedJob]) -> None:
        """Before ``batch`` goes to the job process: make the row name its
        one job when that job is a suspect, else name nothing (or keep the
        lone job a claim named), so it never names a job that finished
        while the next runs."""
        lone = batch[0].id if len(batch) == 1 else None
        target = lone if lone is not None and batch[0].suspect else None
        if self.named_sure and self.named in (target, lone):
            return
        self.unsure()
        with self.store.engine.begin() as connection:
            connection.execute(
                sa.update(self.table)
                .where(self.table.c.id == self.id)
                .values(current_job=target)
            )
        self.noted(target)

    def register(self) -> None:
        """Add this worker's row, first removing rows silent for a day.

        Apart, and retried, because on MySQL/MariaDB the delete's gap locks
        can deadlock with another worker registering at the same moment.
        """
        now = self.store.now()
        table = self.table
        self._execute(
            sa.delete(table).where(table.c.heartbeat_at < now - STALE_SECONDS)
        )
        self._insert_row(now)

    def _insert_row(self, now: int) -> None:
        try:
            self._execute(
                sa.insert(self.table).values(
                    id=self.id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    queues=",".join(self.queues),
                    started_at=now,
                    heartbeat_at=now,
                    current_job=None,
                    stop_requested=False,
                )
            )
        except sa.exc.IntegrityError:
            # The id is this worker's own random token, so a row holding it
            # is this worker's insert: its commit landed although the
            # connection dropped before saying so, and it was run again.
            if not self._registered():
                raise
        self._last_beat = time.monotonic()

    def _registered(self) -> bool:
        with self.store.engine.connect() as connection:
            found = connection.execute(
                sa.select(self.table.c.id).where(self.table.c.id == self.id)
            )
            return found.first() is not None

    def _execute(self, statement: sa.Executable) -> None:
        def run() -> None:
            with self.store.engine.begin() as connection:
                connection.execute(statement)

        retry_contention(run, "worker registration")

    def beat(self, current_job: int | None, *, every: float = 1.0) -> bool:
        """Record that the worker is alive (at most every ``every`` seconds);
        returns whether it was asked to stop."""
        if self._stop_requested or time.monotonic() - self._last_beat < every:
            return self._stop_requested
        self._last_beat = time.monotonic()
        now = self.store.now()
        self.unsure()
        with self.store.engine.begin() as connection:
            beat = connection.execute(
                sa.update(self.table)
                .where(self.table.c.id == self.id)
                .values(heartbeat_at=now, current_job=current_job)
            )
            stop = connection.execute(
                sa.select(self.table.c.stop_requested).where(self.table.c.id == self.id)
            ).scalar()
        if beat.rowcount == 0:
            # Another worker took this one for dead (it went silent too long)
            # and released its jobs; it is alive, so it shows itself again.
            log.warning(
                "this worker was presumed dead after a silence and its jobs were "
                "released; registering again",
                extra={"event": "worker_revived"},
            )
            self._insert_row(now)
            current_job = None
        self.noted(current_job)
        self._stop_requested = bool(stop)
        return self._stop_requested

    def deregister(self) -> None:
        with self.store.engine.begin() as connection:
            connection.execute(sa.delete(self.table).where(self.table.c.id == self.id))


def request_restart(store: DatabaseStore) -> int:
    """Ask every running worker to stop after its current job; how many."""
    store.ensure_tables()
    table = store.tables.workers
    with store.engine.begin() as connection:
        result = connection.execute(sa.update(table).values(stop_requested=True))
        return int(result.rowcount)

"""A worker's row in the workers table: who it is, what it runs, when it was
last heard of, and whether it was asked to stop (``queue restart``)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time

import sqlalchemy as sa

from conveyor.drivers.contention import retry_contention
from conveyor.drivers.database import DatabaseStore

log = logging.getLogger(__name__)

#: Rows silent for longer than this are removed by the next worker to start.
STALE_SECONDS = 24 * 3600


class Presence:
    def __init__(self, store: DatabaseStore, queues: list[str]) -> None:
        self.store = store
        self.table = store.tables.workers
        self.id = secrets.token_hex(16)
        self.queues = queues
        self._last_beat = 0.0
        self._stop_requested = False

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

"""Waking an idle worker when a job is pushed.

On PostgreSQL every push sends a ``NOTIFY`` on the queue table's channel
from its own ``INSERT`` (delivered at its commit, once the jobs are
visible; see ``drivers.inserting``), and
an idle worker waits on a connection that ``LISTEN``\\ s to it instead of
sleeping out ``--sleep``. A notification that arrives while the worker is
busy waits on that connection and ends the next idle wait at once: at worst
one claim finds nothing. Elsewhere, or while the listening connection is
down, the worker polls every ``--sleep`` seconds as before; a broken
connection is opened again at most every few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from conveyor.drivers.database import DatabaseStore

log = logging.getLogger(__name__)

#: Seconds between attempts to listen again after the connection broke.
RETRY_SECONDS = 5.0


class Wakeup:
    def __init__(self, store: DatabaseStore) -> None:
        self.store = store
        self._connection: Any = None
        self._failed_at = -RETRY_SECONDS

    def start(self) -> None:
        """Listen, on PostgreSQL; call before the first claim, so that no
        push between that claim and the first wait goes unheard."""
        if self.store.family != "postgresql" or self._connection is not None:
            return
        if time.monotonic() - self._failed_at < RETRY_SECONDS:
            return
        try:
            raw = self.store.engine.raw_connection()
            connection: Any = raw.driver_connection
            # Its own connection for the worker's life, out of the pool.
            raw.detach()
            connection.autocommit = True
            connection.execute(f'LISTEN "{self.store.channel}"')
            self._connection = connection
        except Exception as exc:  # the worker polls instead
            self._broken(exc)

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds``; whether a push ended the wait early."""
        self.start()
        if self._connection is None:
            time.sleep(seconds)
            return False
        heard: list[Any] = []
        try:
            heard = list(self._connection.notifies(timeout=seconds, stop_after=1))
            if heard:
                # More may have queued up together; they say nothing more.
                list(self._connection.notifies(timeout=0))
        except Exception as exc:
            # The server ended the connection (even just after a push was
            # heard): listen again later, and poll meanwhile.
            self._broken(exc)
        return bool(heard)

    def close(self) -> None:
        if self._connection is not None:
            # Closing a broken connection may fail too.
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def _broken(self, exc: Exception) -> None:
        log.debug(
            "cannot listen for pushes (%r); polling instead",
            exc,
            extra={"event": "listen_failed"},
        )
        self.close()
        self._failed_at = time.monotonic()

"""How the worker rides out a database that goes away: its own work waits
and reconnects, its bookkeeping (heartbeats, counts) carries on without."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from conveyor.drivers.database import DatabaseStore
from conveyor.exceptions import DatabaseRefused
from conveyor.worker.signals import StopFlags

# These lines keep the logger they had while this code was part of the
# worker loop, so that a logging setup that routes or silences that logger
# by name still gets them.
log = logging.getLogger("conveyor.worker.loop")
T = TypeVar("T")


class Outages:
    """Runs a worker's database actions through outages of ``store``'s
    database, until ``flags`` say stop."""

    def __init__(self, store: DatabaseStore, flags: StopFlags) -> None:
        self.store = store
        self.flags = flags
        #: Set once the worker has left its loop: it will not reconnect.
        self.stopping = False

    def wait_out(self, action: Callable[[], T], *, at_start: bool = False) -> T:
        """Run ``action``, waiting out a database that went away: log, wait
        (1, 2, 4 ... 30 s), reconnect, try again; give up only when told to
        stop (at start, where nothing is held yet, any stop will do)."""
        delay = 1.0
        while True:
            try:
                return action()
            except DBAPIError as exc:
                if not exc.connection_invalidated and not _is_connection_error(exc):
                    raise
                if at_start and _refused_for_good(exc):
                    # Waiting would never end: the settings are wrong, not
                    # the server down.
                    raise DatabaseRefused(
                        f"the database refused this worker: {_first_line(exc)}; "
                        "check database_url"
                    ) from None
                if at_start and (self.flags.warm or self.flags.cold):
                    raise StoppedAtStart from exc
                log.warning(
                    "database unreachable (%s); trying again in %.0f s",
                    _first_line(exc),
                    delay,
                    extra={"event": "database_unreachable"},
                )
                self.store.engine.dispose()
                end = time.monotonic() + delay
                while time.monotonic() < end:
                    if at_start and (self.flags.warm or self.flags.cold):
                        raise StoppedAtStart from exc
                    if self.flags.cold:
                        raise
                    time.sleep(0.1)
                delay = min(delay * 2, 30.0)

    def quietly(self, action: Callable[[], T]) -> T | None:
        """Bookkeeping that must never stop the worker (heartbeats)."""
        try:
            return action()
        except DBAPIError as exc:
            if _is_connection_error(exc):
                log.warning(
                    "database unreachable (%s); %s",
                    _first_line(exc),
                    self._what_happens_next(),
                    extra={"event": "database_unreachable"},
                )
            else:
                log.exception(
                    "bookkeeping failed", extra={"event": "bookkeeping_failed"}
                )
            return None

    def _what_happens_next(self) -> str:
        # Say what becomes of what a stopping worker could not tidy, so the
        # operator need not clean up by hand.
        if self.stopping:
            return (
                "the worker stops without tidying up: jobs it held come back "
                "when their lease runs out"
            )
        return "the worker goes on and reconnects"


class StoppedAtStart(Exception):
    """A stop was asked for while the worker waited for its database at
    start; nothing is held yet, so it just stops."""


def _first_line(exc: DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_connection_error(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))


#: What a server says to settings that are wrong (a database or role that
#: does not exist, a password refused), as against a server that is down
#: or starting: MySQL's error numbers (1698: a user without a password
#: that MariaDB does not know), PostgreSQL's words (psycopg gives no
#: SQLSTATE for a refused connection).
_REFUSED_MYSQL = {1044, 1045, 1049, 1698}
_REFUSED_POSTGRESQL = (
    "does not exist",
    "password authentication failed",
    "no pg_hba.conf entry",
)


def _refused_for_good(exc: DBAPIError) -> bool:
    args = getattr(exc.orig, "args", ())
    if args and args[0] in _REFUSED_MYSQL:
        return True
    message = str(exc.orig)
    return "FATAL:" in message and any(
        words in message for words in _REFUSED_POSTGRESQL
    )

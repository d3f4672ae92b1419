"""Telling contention from failure, and waiting it out.

Workers and producers share two tables, so they sometimes get in each
other's way: MySQL/MariaDB picks a deadlock victim or gives up a lock wait,
PostgreSQL does the same under heavy load, and SQLite answers "database is
locked" when its busy timeout ran out. None of that is the job's fault. The
statement was rolled back whole, so the store runs the same transaction
again after a short, growing, jittered pause, and the job never sees it: no
attempt is counted and nothing is written to ``failed_jobs``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: MySQL/MariaDB: ER_LOCK_WAIT_TIMEOUT and ER_LOCK_DEADLOCK.
_MYSQL_CODES = frozenset({1205, 1213})
#: PostgreSQL: serialization_failure, deadlock_detected, lock_not_available.
_POSTGRESQL_STATES = frozenset({"40001", "40P01", "55P03"})
_SQLITE_MESSAGES = ("database is locked", "database table is locked")

ATTEMPTS = 10


def is_contention(exc: DBAPIError) -> bool:
    """Whether ``exc`` says another transaction was in the way, rather than
    that the statement or the connection is at fault."""
    orig = exc.orig
    if orig is None:
        return False
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _POSTGRESQL_STATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_CODES:
        return True
    text = str(orig).lower()
    return type(orig).__module__.startswith("sqlite3") and any(
        message in text for message in _SQLITE_MESSAGES
    )


def retry_contention(action: Callable[[], T], what: str) -> T:
    """Run ``action`` (one whole transaction), again while it loses to
    contention, up to ``ATTEMPTS`` times; the last error is raised."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return action()
        except DBAPIError as exc:
            if attempt == ATTEMPTS or not is_contention(exc):
                raise
            pause = min(0.01 * 2**attempt, 1.0) * random.uniform(0.5, 1.5)
            log.debug(
                "%s lost to another transaction (%s); trying again in %.0f ms",
                what,
                str(exc.orig).splitlines()[0],
                pause * 1000,
                extra={"event": "contention_retry"},
            )
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover

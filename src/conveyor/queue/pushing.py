"""Pushing jobs: what a web application calls."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from conveyor.config import Settings, load_settings
from conveyor.db import create_engine
from conveyor.drivers.base import NewJob
from conveyor.drivers.database import DatabaseStore
from conveyor.drivers.tables import queue_tables
from conveyor.exceptions import PayloadError, QueueError
from conveyor.queue.payload import encode_all
from conveyor.queue.registry import is_job_class

Delay = int | float | dt.timedelta | dt.datetime


class Queue:
    """Pushes jobs onto the configured database.

    ``Queue()`` reads the same settings as the CLI (``conveyor.toml``,
    ``CONVEYOR_DATABASE_URL``); ``Queue(url)`` uses that database instead.
    The tables are created on first use.
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None):
        settings = settings or load_settings(database_url=url)
        if url is not None and settings.database_url != url:
            from dataclasses import replace

            settings = replace(settings, database_url=url)
        self.settings = settings
        self.store = DatabaseStore(
            create_engine(settings.database_url),
            queue_tables(settings.queue),
            retry_after=settings.queue.retry_after,
        )

    def push(self, job: Any, data: Any = None, *, queue: str | None = None) -> int:
        """Push ``job`` (a job class, or its name) with ``data``; its id."""
        return self._push(job, [data], queue=queue, delay=0)[0]

    def push_on(self, queue: str, job: Any, data: Any = None) -> int:
        """Push onto the named queue."""
        return self._push(job, [data], queue=queue, delay=0)[0]

    def later(
        self, delay: Delay, job: Any, data: Any = None, *, queue: str | None = None
    ) -> int:
        """Push a job that no worker takes before ``delay``: seconds, a
        ``timedelta``, or an aware ``datetime`` (naive ones are refused, since
        their time zone is a guess)."""
        return self._push(job, [data], queue=queue, delay=delay)[0]

    def bulk(
        self, job: Any, items: Iterable[Any], queue: str | None = None
    ) -> list[int]:
        """Push one job per item of ``items`` in one round trip; their ids."""
        return self._push(job, _bulk_items(items), queue=queue, delay=0, bulk=True)

    def close(self) -> None:
        self.store.dispose()

    # -- the steps ---------------------------------------------------------

    def _push(
        self,
        job: Any,
        items: list[Any],
        *,
        queue: str | None,
        delay: Delay,
        bulk: bool = False,
    ) -> list[int]:
        name, job_queue = _job_name(job)
        target = (
            queue if queue is not None else job_queue or self.settings.queue.default
        )
        _check_queue_name(target)
        payloads = encode_all(name, items, bulk=bulk)
        available_at = self._available_at(delay)
        return self.store.push(
            [NewJob(target, payload, available_at) for payload in payloads]
        )

    def _available_at(self, delay: Delay) -> int:
        now = self.store.clock()
        if isinstance(delay, dt.datetime):
            if delay.tzinfo is None or delay.utcoffset() is None:
                raise QueueError(
                    "later(): a naive datetime has no time zone; pass an aware "
                    "one (e.g. datetime.now(timezone.utc) + ...) or seconds"
                )
            due = delay.timestamp()
        elif isinstance(delay, dt.timedelta):
            if delay.total_seconds() < 0:
                raise QueueError(f"later(): delay must not be negative, not {delay}")
            due = now + delay.total_seconds()
        elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
            if not math.isfinite(delay) or delay < 0:
                raise QueueError(
                    f"later(): delay must be 0 or more seconds, not {delay}"
                )
            due = now + delay
        else:
            raise QueueError(
                f"later(): delay must be seconds, a timedelta or an aware datetime, "
                f"not {type(delay).__name__}"
            )
        if due <= now:
            # Due at once: the current whole second, which a worker's clock
            # (also in whole seconds) has already reached.
            return int(now)
        # Rounded up: a job is never handed out before it is due.
        return math.ceil(due)


def _job_name(job: Any) -> tuple[str, str | None]:
    if isinstance(job, str):
        if not job.isidentifier():
            raise PayloadError(f"job name {job!r} is not a class name")
        return job, None
    if is_job_class(job):
        return job.__name__, getattr(job, "queue", None)
    raise PayloadError(
        f"{job!r} is not a job: pass a class with handle(self, data), or its name"
    )


def _bulk_items(items: Any) -> list[Any]:
    # A string or a dict is iterable too, but a bulk of its characters or
    # its keys is never what was meant.
    if isinstance(items, (str, bytes, bytearray, Mapping)) or not isinstance(
        items, Iterable
    ):
        raise PayloadError(
            "bulk(): items must be a list of data, one item per job; got "
            f"{type(items).__name__}"
        )
    return list(items)


def _check_queue_name(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > 255:
        raise QueueError(f"queue name {name!r} must be a string of 1 to 255 characters")
    if name != name.strip():
        raise QueueError(f"queue name {name!r} starts or ends with white space")

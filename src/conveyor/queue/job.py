"""What a job is: a class with ``handle(self, data)``.

Subclassing :class:`Job` is optional; it only adds shortcuts to the
:class:`JobContext` the worker hands every job before ``handle`` runs.
Class attributes override the worker's options for that job:

``queue``
    the queue it is pushed to when the push names none;
``tries``
    how many attempts it gets (0: no limit);
``timeout``
    seconds one attempt may take before it is stopped (more than 0 and less
    than ``retry_after``);
``backoff``
    seconds to wait before a retry, or a list with one entry per attempt
    (the last one repeats).

``failed(self, data, error)``, if defined, runs once when the job fails for
good, with the error's text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ReleaseRequested(Exception):  # noqa: N818 - a signal, not an error
    """Raised by :meth:`JobContext.release` to end ``handle`` early."""

    def __init__(self, delay: int) -> None:
        super().__init__(f"released with a delay of {delay} s")
        self.delay = delay


class FailRequested(Exception):  # noqa: N818 - a signal, not an error
    """Raised by :meth:`JobContext.fail` to fail the job with no more tries."""


@dataclass
class JobContext:
    """What a running job knows about itself."""

    id: int
    queue: str
    #: 1 on the first run, 2 on the first retry, and so on.
    attempt: int
    uuid: str
    _pusher: Callable[[], Any] = field(repr=False, default=lambda: None)

    def release(self, delay: int = 0) -> None:
        """Stop here and run the job again in ``delay`` seconds. Counts as an
        attempt."""
        raise ReleaseRequested(int(delay))

    def fail(self, reason: str) -> None:
        """Stop here and fail the job for good, whatever tries remain."""
        raise FailRequested(reason)

    @property
    def queue_client(self) -> Any:
        """A :class:`conveyor.Queue` on the same database, to push other
        jobs."""
        return self._pusher()


class Job:
    """Optional base class for jobs; see the module documentation."""

    queue: str | None = None
    tries: int | None = None
    timeout: float | None = None
    backoff: int | list[int] | None = None

    #: Set by the worker before ``handle`` runs.
    context: JobContext

    def handle(self, data: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no handle()")

    def release(self, delay: int = 0) -> None:
        self.context.release(delay)

    def fail(self, reason: str) -> None:
        self.context.fail(reason)

    def push(self, job: Any, data: Any = None, **options: Any) -> int:
        """Push another job onto the queue this job came from's database."""
        result: int = self.context.queue_client.push(job, data, **options)
        return result

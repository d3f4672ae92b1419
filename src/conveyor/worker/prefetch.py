"""The jobs a worker claimed ahead, and the finished ones waiting to be
deleted together.

A worker claims up to ``--prefetch`` jobs in one transaction and deletes the
jobs that ran in groups, which turns two transactions per job into two per
group. What keeps this as safe as claiming one job at a time:

- every claimed row has its own lease, counted from the claim; a claimed job
  is started only while it can still finish, timeout included, well inside
  that lease (``max_wait``); otherwise it and the jobs behind it are put back
  at once and claimed again;
- a job is deleted only after it ran, and a finished job waits for its group
  for at most a second;
- a worker that stops puts the jobs it never started back at once, without
  counting an attempt for them.

- a worker killed outright (SIGKILL, out of memory, host lost) holding a
  claim counts an attempt and a crash only for the job its row named as
  running; the others come back uncounted (``conveyor.drivers.recovery``).

What prefetch still changes: the jobs a killed worker had finished but not
yet deleted run again (at-least-once, up to a batch instead of one job), and
when its row named no job, all it held come back as suspects, which then run
one at a time until each has run once.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from conveyor.drivers.base import ReservedJob
from conveyor.worker.child import BATCH_PAUSE_SECONDS
from conveyor.worker.process import Outcome

#: Jobs claimed per round trip unless ``--prefetch`` says otherwise: as fast
#: a drain as 100 on PostgreSQL and MariaDB, and half the jobs a killed
#: worker puts back (see docs/performance.md).
DEFAULT_PREFETCH = 50
#: Seconds a claimed job may wait before it starts, at most.
MAX_WAIT = 2.0
#: Seconds a finished job may wait for its group delete.
MAX_DONE_WAIT = 1.0
#: Seconds kept between the end of a job's timeout and the end of its lease:
#: leases are stamped in whole seconds, and killing a job takes a moment.
LEASE_MARGIN = 2.0


def max_wait(retry_after: float, longest_timeout: float) -> float:
    """How long a claimed job may wait for its turn: it must still be able
    to run its whole timeout inside its lease. Zero or less means jobs must
    be claimed one at a time."""
    return min(MAX_WAIT, retry_after - longest_timeout - LEASE_MARGIN)


@dataclass
class Prefetch:
    """Claimed jobs not started yet, and finished jobs not deleted yet."""

    #: Jobs claimed per round trip; 1 claims one at a time.
    size: int
    #: Seconds a claimed job may wait for its turn (see ``max_wait``).
    wait: float
    #: Jobs the next claim may take, up to ``size``: one at first, twice as
    #: many after each claim, back to one after a slow job. Slow jobs then
    #: spread over the workers instead of waiting behind one worker's
    #: running job (the complaint Celery's prefetch draws); fast ones reach
    #: ``size`` within a few claims.
    ramp: int = 1
    waiting: deque[ReservedJob] = field(default_factory=deque)
    done: list[tuple[ReservedJob, Outcome]] = field(default_factory=list)
    claimed_at: float = 0.0
    #: The next batch, claimed while the job process runs the current one
    #: (see ``conveyor.worker.ahead``), and when.
    ahead: list[ReservedJob] = field(default_factory=list)
    ahead_at: float = 0.0

    def claim_size(self, remaining: int | None) -> int:
        """How many jobs to claim next; ``remaining`` is how many more the
        worker may run (``--max-jobs``, ``--once``), ``None`` for no limit."""
        size = min(self.size, self.ramp) if self.wait > 0 else 1
        if remaining is not None:
            size = min(size, remaining)
        return max(size, 1)

    def claimed(self, jobs: list[ReservedJob]) -> None:
        self.waiting.extend(jobs)
        self.claimed_at = time.monotonic()
        if jobs:
            self.ramp = min(self.size, self.ramp * 2)

    def ran(self, seconds: float | None) -> None:
        """A job of the claim ended after ``seconds``: the next claim takes
        one job again after a slow one (see ``ramp``)."""
        if (seconds or 0.0) >= BATCH_PAUSE_SECONDS:
            self.ramp = 1

    def fresh(self) -> bool:
        """Whether the waiting jobs may still start within their leases."""
        return time.monotonic() - self.claimed_at <= max(self.wait, 0.0)

    def take_waiting(self) -> list[ReservedJob]:
        """Every claimed job not started, the next batch's included."""
        jobs = [*self.waiting, *self.take_ahead()]
        self.waiting.clear()
        return jobs

    def take_ahead(self) -> list[ReservedJob]:
        jobs, self.ahead = self.ahead, []
        return jobs

    def claimed_ahead(self, jobs: list[ReservedJob]) -> None:
        self.ahead = jobs
        self.ahead_at = time.monotonic()

    def promote_ahead(self) -> None:
        """The current batch is over: the next one waits its turn now."""
        if not self.waiting and self.ahead:
            self.waiting.extend(self.take_ahead())
            self.claimed_at = self.ahead_at

    def add_done(self, job: ReservedJob, outcome: Outcome) -> None:
        self.done.append((job, outcome))

    def done_due(self) -> bool:
        """Whether the finished jobs should be deleted before the batch
        ends (where the next claim deletes them): their leases are aging."""
        return bool(self.done) and (time.monotonic() - self.claimed_at >= MAX_DONE_WAIT)

    def take_done(self) -> list[tuple[ReservedJob, Outcome]]:
        done, self.done = self.done, []
        return done

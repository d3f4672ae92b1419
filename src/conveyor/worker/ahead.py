"""Claiming the next batch while the job process runs the current one.

A worker draining a busy queue alternates between two waits: the job
process runs a batch while the worker waits for its results, then the
worker deletes the finished jobs and claims the next batch while the job
process waits for it. On PostgreSQL that transaction is about 40 µs a job,
as long as the no-op jobs themselves, half of it waiting for the server;
made while the batch runs, that wait overlaps the job process's work and
the worker's own.

What keeps it as safe as claiming between batches:

- it is made only when the queue is busy: the batch running is a whole
  claim at the full ``--prefetch``, of jobs that ran fast so far;
- the next batch is held apart (``Prefetch.ahead``) and given back,
  uncounted, as soon as a job of the running batch has run
  ``presence.NAME_AFTER`` (see ``Worker._let_go_behind``), so slow jobs
  never keep a batch from idle workers for more than a moment;
- it names no job in the worker's row, so a crash is still charged to the
  job of the running batch (see ``conveyor.drivers.recovery``);
- it runs on a thread of its own (but on SQLite), and the worker waits
  for it before it gives back, claims or stops, never while results come
  (the job process's timeouts are watched between results); a failure
  leaves the claim in doubt, and the next claim between batches puts back
  whatever the worker holds before it claims again, as after any claim in
  doubt.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.exc import DBAPIError

from conveyor.drivers.base import ReservedJob
from conveyor.drivers.database import DatabaseStore
from conveyor.worker.prefetch import Prefetch
from conveyor.worker.process import Outcome

log = logging.getLogger("conveyor.worker")

Done = list[tuple[ReservedJob, Outcome]]
Claimed = tuple[list[bool], list[ReservedJob]]
LogDone = Callable[[Done, list[bool]], None]


class ClaimAhead:
    def __init__(
        self,
        store: DatabaseStore,
        prefetch: Prefetch,
        queues: Sequence[str],
        holder: str,
    ) -> None:
        self.store = store
        self.prefetch = prefetch
        self.queues = list(queues)
        self.holder = holder
        #: A claim ahead failed: it may have landed unseen.
        self.in_doubt = False
        self._thread: ThreadPoolExecutor | None = None
        #: The claim running on that thread, and the jobs it deletes.
        self._pending: tuple[Future[Claimed], Done] | None = None

    def worth_it(self, batch: Sequence[ReservedJob], limited: bool) -> bool:
        """Whether to claim the next batch while ``batch`` runs: it is the
        whole of a full-size claim (the queue is busy and its jobs fast),
        and nothing (``--max-jobs``, ``--max-time``, ``--once``, a stop) limits
        the run."""
        prefetch = self.prefetch
        return (
            not limited
            and prefetch.size > 1
            and prefetch.wait > 0
            and not prefetch.ahead
            and self._pending is None
            and prefetch.ramp >= prefetch.size
            and len(batch) == len(prefetch.waiting) == prefetch.size
            and not batch[0].suspect
        )

    def start(self, running: Sequence[ReservedJob]) -> None:
        """Delete the jobs that ran and claim the next batch, in one
        transaction, while ``running`` runs; its outcome is taken by
        ``finish``. On a server's database, on a thread of its own: the
        transaction mostly waits for the server, time the worker spends
        reading the running batch's results and logging them. SQLite's
        transaction is all CPU in this process, where a thread would only
        contend for the interpreter (SQLite drained 20 % slower with it)."""
        done = self.prefetch.take_done()
        claim = functools.partial(
            self.store.delete_and_reserve,
            [job for job, _ in done],
            self.queues,
            self.holder,
            self.prefetch.size,
            running=running,
        )
        if self.store.family == "sqlite":
            claimed: Future[Claimed] = Future()
            try:
                claimed.set_result(claim())
            except DBAPIError as exc:
                claimed.set_exception(exc)
        else:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, "conveyor-claim")
            claimed = self._thread.submit(claim)
        self._pending = (claimed, done)

    def finish(self, log_done: LogDone) -> None:
        """Wait for the claim ``start`` began, if any: log the jobs it
        deleted and hold the batch it claimed apart (``Prefetch.ahead``)."""
        if self._pending is None:
            return
        claim, done = self._pending
        self._pending = None
        try:
            held, claimed = claim.result()
        except DBAPIError as exc:
            # Its commit may have landed: the next claim between batches
            # settles that (see the module's docstring).
            self.prefetch.done[:0] = done
            self.in_doubt = True
            log.debug("claim ahead failed: %s", exc)
            return
        log_done(done, held)
        self.prefetch.claimed_ahead(claimed)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

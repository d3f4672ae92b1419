"""What becomes of a job once an attempt has ended: deleted with its group,
put back on its queue, or failed into the failed-job store; counted and
logged, one line a job."""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, TypeVar

from sqlalchemy.exc import DBAPIError

from conveyor.config import Settings
from conveyor.drivers.base import ReservedJob
from conveyor.drivers.database import DatabaseStore
from conveyor.worker.metrics import MinuteCounts
from conveyor.worker.options import WorkerOptions, WorkerStats
from conveyor.worker.prefetch import Prefetch
from conveyor.worker.process import ChildProcess, Outcome
from conveyor.worker.retry import Action, Decision, decide
from conveyor.worker.signals import StopFlags

# The job lines keep the logger they had while this code was part of the
# worker loop, so that a logging setup that routes or silences that logger
# by name still gets them.
log = logging.getLogger("conveyor.worker.loop")
T = TypeVar("T")

_LOG_LEVELS = {"DONE": logging.INFO, "RETRY": logging.WARNING, "FAILED": logging.ERROR}


class WithDatabase(Protocol):
    """Runs a database action, waiting out a database that went away (see
    ``Outages.wait_out``)."""

    def __call__(self, action: Callable[[], T], /) -> T: ...


class Outcomes:
    """Applies how each attempt of a worker's jobs ended, with the worker's
    store, counts and job process."""

    def __init__(
        self,
        settings: Settings,
        options: WorkerOptions,
        store: DatabaseStore,
        *,
        stats: WorkerStats,
        metrics: MinuteCounts,
        flags: StopFlags,
        prefetch: Prefetch,
        child: ChildProcess,
        with_database: WithDatabase,
    ) -> None:
        self.settings = settings
        self.options = options
        self.store = store
        self.stats = stats
        self.metrics = metrics
        self.flags = flags
        self.prefetch = prefetch
        self.child = child
        self._with_database = with_database

    def process(self, job: ReservedJob, outcome: Outcome) -> bool:
        """Apply how one attempt ended; whether the job went back to its
        queue."""
        if outcome.status == "done":
            # The common case, kept short: deleted with its group.
            self.prefetch.add_done(job, outcome)
            self._check_memory(outcome)
            return False

        max_crashes = self.settings.queue.max_crashes
        if outcome.job == "?":
            outcome = replace(outcome, job=_job_name(job))
        if outcome.status == "stopped":
            # A cold stop: the attempt did not finish, so put the job back
            # at once rather than making it wait out its lease.
            self._with_database(lambda: self.store.release(job, 0, count=False))
            self._log("RELEASED", job, outcome, f"stopped: {self.flags.reason}")
            return True

        crashed = outcome.status == "crashed"
        decision = decide(
            outcome.status,
            attempt=job.attempts,
            tries=outcome.tries,
            backoff=outcome.backoff,
            release_delay=outcome.delay,
            crashes=job.crashes + crashed,
            max_crashes=max_crashes,
        )
        poisoned = max_crashes and job.crashes + 1 >= max_crashes
        if crashed and decision.action is Action.FAIL and poisoned:
            reason = (
                f"PoisonJob: {outcome.summary}; it has killed its process "
                f"{job.crashes + 1} time(s) ([queue] max_crashes = {max_crashes}), "
                "so it is not tried again"
            )
            outcome = replace(outcome, error=reason, summary=reason)
        try:
            self._apply(job, outcome, decision)
        except DBAPIError:
            # Recording the outcome failed in a way a retry will not mend;
            # the job stays reserved and comes back after retry_after.
            log.exception(
                "job #%d: could not record its outcome (%s); it will be handed "
                "out again after retry_after",
                job.id,
                decision.action.value,
                extra={"event": "outcome_not_recorded"},
            )
        self._check_memory(outcome)
        return decision.action is Action.RELEASE

    def _check_memory(self, outcome: Outcome) -> None:
        if self.options.memory:
            used_kb = max(outcome.rss_kb, _own_rss_kb())
            if used_kb / 1024 > self.options.memory:
                self.flags.ask_warm(
                    f"--memory={self.options.memory} MB passed ({used_kb // 1024} MB)",
                    renew=True,
                )

    def poisoned(self, job: ReservedJob) -> bool:
        """Whether ``job``'s workers died running it ``[queue] max_crashes``
        times: it is failed rather than run again."""
        max_crashes = self.settings.queue.max_crashes
        return bool(max_crashes and job.crashes >= max_crashes)

    def fail_poisoned(self, job: ReservedJob) -> None:
        # Its worker died while running it, again and again (the lease ran
        # out or the heartbeat stopped): do not let it kill another.
        reason = (
            f"PoisonJob: its worker died {job.crashes} time(s) while running "
            f"it (killed, out of memory, or its host lost); not tried again "
            f"([queue] max_crashes = {self.settings.queue.max_crashes})"
        )
        outcome = Outcome("crashed", job=_job_name(job), error=reason, summary=reason)
        self._apply(job, outcome, Decision(Action.FAIL))

    def _apply(self, job: ReservedJob, outcome: Outcome, decision: Decision) -> None:
        if decision.action is Action.DELETE:
            # Deleted with its group, after the next jobs or within a second.
            self.prefetch.add_done(job, outcome)
            return
        if decision.action is Action.RELEASE:
            crashed = outcome.status == "crashed"
            held = self._record(
                lambda: self.store.release(job, decision.delay, crashed=crashed),
                lambda: self.store.was_released(job),
            )
            self.stats.retried += outcome.status != "release"
            detail = f"again in {decision.delay} s"
            if outcome.summary:
                detail += f": {outcome.summary}"
            self._log(
                "RETRY" if outcome.status != "release" else "RELEASED",
                job,
                outcome,
                detail,
            )
        else:
            held = self._fail(job, outcome)
            self.stats.failed += 1
            self._log("FAILED", job, outcome, outcome.summary or outcome.status)
        if not held:
            self._lease_lost(job, decision.action)

    def _fail(self, job: ReservedJob, outcome: Outcome) -> bool:
        from conveyor.queue.payload import Payload

        exception = outcome.error or outcome.summary or outcome.status
        try:
            uuid = Payload.decode(job.payload).uuid
        except Exception:
            uuid = ""
        held = self._record(
            lambda: self.store.fail(job, exception, uuid),
            lambda: self.store.was_failed(job, uuid),
        )
        if held and outcome.status not in ("invalid",):
            hook = self.child.run_failed_hook(
                job, exception, self.options.timeout or 60
            )
            if hook.status != "done":
                log.warning(
                    "job #%d: its failed() hook did not finish: %s",
                    job.id,
                    hook.summary,
                    extra={"event": "failed_hook_error"},
                )
        return held

    def _record(self, action: Callable[[], bool], landed: Callable[[], bool]) -> bool:
        """Record an outcome (``action`` says whether the worker still held
        the job); when the connection dropped during a try, ask ``landed``
        whether that try's commit went through before saying the lease was
        lost, since the retry then finds the row already changed."""
        tries = 0

        def once() -> bool:
            nonlocal tries
            tries += 1
            return action()

        held = self._with_database(once)
        if not held and tries > 1:
            held = self._with_database(landed)
        return held

    def log_done(
        self, done: list[tuple[ReservedJob, Outcome]], held: list[bool]
    ) -> None:
        """Count and log the jobs that ran and were deleted; ``held`` says,
        job by job, whether the worker still held it when it was deleted."""
        for (job, outcome), still_held in zip(done, held, strict=True):
            self.stats.done += 1
            self._log("DONE", job, outcome)
            if not still_held:
                self._lease_lost(job, Action.DELETE)

    def _lease_lost(self, job: ReservedJob, action: Action) -> None:
        log.warning(
            "job #%d: its lease ran out while it ran and another worker may "
            "hold it now; this worker's outcome (%s) was not recorded",
            job.id,
            action.value,
            extra={"event": "lease_lost"},
        )

    def _log(
        self, status: str, job: ReservedJob, outcome: Outcome, detail: str = ""
    ) -> None:
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        self.metrics.count(job.queue, status)
        level = _LOG_LEVELS.get(status, logging.INFO)
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            "%-8s %s #%d queue=%s attempt=%d %.1f ms%s",
            status,
            outcome.job,
            job.id,
            job.queue,
            job.attempts,
            outcome.seconds * 1000,
            f" ({detail})" if detail else "",
            extra={
                "event": "job_" + status.lower(),
                "job": outcome.job,
                "job_id": job.id,
                "queue": job.queue,
                "attempt": job.attempts,
                "duration_ms": round(outcome.seconds * 1000, 3),
                "status": status,
            },
        )


def _job_name(job: ReservedJob) -> str:
    """The job name from the payload, for the log; never imports anything."""
    from conveyor.queue.payload import Payload

    try:
        return Payload.decode(job.payload).job
    except Exception:
        return "?"


def _own_rss_kb() -> int:
    """The worker process's own peak resident memory, in KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

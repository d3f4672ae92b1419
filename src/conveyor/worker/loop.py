"""The worker: reserve a job, have the child run it, apply the decision,
log one line; until told to stop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from conveyor.config import Settings
from conveyor.drivers.base import ReservedJob
from conveyor.drivers.database import DatabaseStore
from conveyor.exceptions import ConfigError
from conveyor.worker.presence import Presence
from conveyor.worker.process import ChildProcess, Outcome
from conveyor.worker.retry import Action, Decision, decide
from conveyor.worker.signals import SignalHandlers, StopFlags

log = logging.getLogger(__name__)
T = TypeVar("T")

_LOG_LEVELS = {"DONE": logging.INFO, "RETRY": logging.WARNING, "FAILED": logging.ERROR}


@dataclass(frozen=True)
class WorkerOptions:
    """The options of ``conveyor queue work``."""

    queues: tuple[str, ...] = ("default",)
    #: Seconds one attempt may take; 0 for no limit.
    timeout: float = 60
    #: Seconds to wait when every queue is empty.
    sleep: float = 3
    #: Attempts per job; 0 for no limit.
    tries: int = 1
    backoff: tuple[int, ...] = (0,)
    max_jobs: int = 0
    max_time: float = 0
    #: Stop when the job process's memory passes this many MB; 0 for none.
    memory: int = 0
    stop_when_empty: bool = False
    once: bool = False


@dataclass
class WorkerStats:
    done: int = 0
    retried: int = 0
    failed: int = 0
    stop_reason: str = ""
    by_status: dict[str, int] = field(default_factory=dict)


class Worker:
    def __init__(
        self, settings: Settings, options: WorkerOptions, store: DatabaseStore
    ) -> None:
        self.settings = settings
        self.options = options
        self.store = store
        self.flags = StopFlags()
        self.child = ChildProcess(settings)
        self.presence = Presence(store, list(options.queues))
        self.stats = WorkerStats()
        self._started = 0.0

    def validate(self) -> None:
        """Refuse options that cannot work, before taking any job."""
        retry_after = self.settings.queue.retry_after
        if self.options.timeout and retry_after <= self.options.timeout:
            raise ConfigError(
                f"--timeout={self.options.timeout:g} must be less than retry_after "
                f"({retry_after} s, [queue] retry_after in conveyor.toml): otherwise "
                "a job still running would be handed to another worker"
            )
        if self.options.tries < 0:
            raise ConfigError("--tries must be 0 (no limit) or more")

    def run(self) -> WorkerStats:
        """Work until a stop condition; returns what was done."""
        self.validate()
        self.store.ensure_tables()
        self.child.start()
        self.presence.register()
        self._started = time.monotonic()
        log.info(
            "worker started on queue(s) %s",
            ",".join(self.options.queues),
            extra={"event": "worker_started"},
        )
        try:
            with SignalHandlers(self.flags):
                self._loop()
        finally:
            self.child.stop()
            self._quietly(self.presence.deregister)
            log.info(
                "worker stopped (%s): %d done, %d retried, %d failed",
                self.stats.stop_reason,
                self.stats.done,
                self.stats.retried,
                self.stats.failed,
                extra={"event": "worker_stopped"},
            )
        return self.stats

    # -- the loop ------------------------------------------------------------

    def _loop(self) -> None:
        processed = 0
        while True:
            reason = self._stop_reason(processed)
            if reason:
                self.stats.stop_reason = reason
                return
            job = self._with_database(self._reserve_next)
            if job is None:
                if self.options.stop_when_empty or self.options.once:
                    self.stats.stop_reason = "queue empty"
                    return
                self._idle()
                continue
            self._process(job)
            processed += 1
            if self.options.once:
                self.stats.stop_reason = "--once"
                return

    def _stop_reason(self, processed: int) -> str:
        if self.flags.cold or self.flags.warm:
            return self.flags.reason
        if self.options.max_jobs and processed >= self.options.max_jobs:
            return f"--max-jobs={self.options.max_jobs} reached"
        elapsed = time.monotonic() - self._started
        if self.options.max_time and elapsed >= self.options.max_time:
            return f"--max-time={self.options.max_time:g} reached"
        self._heartbeat(None)
        return self.flags.reason if self.flags.warm else ""

    def _reserve_next(self) -> ReservedJob | None:
        """The first available job, queues tried in the order given."""
        for queue in self.options.queues:
            job = self.store.reserve(queue)
            if job is not None:
                return job
        return None

    def _idle(self) -> None:
        """Wait ``--sleep`` seconds, still answering signals and restarts."""
        deadline = time.monotonic() + self.options.sleep
        while time.monotonic() < deadline and not (self.flags.warm or self.flags.cold):
            self._heartbeat(None)
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))

    # -- one job -------------------------------------------------------------

    def _process(self, job: ReservedJob) -> None:
        outcome = self.child.run(
            job,
            {
                "tries": self.options.tries,
                "timeout": self.options.timeout,
                "backoff": list(self.options.backoff),
            },
            should_stop=lambda: self.flags.cold,
            on_wait=lambda: self._heartbeat(job.id),
        )
        if outcome.job == "?":
            outcome = replace(outcome, job=_job_name(job))
        if outcome.status == "stopped":
            # A cold stop: the attempt did not finish, so put the job back
            # at once rather than making it wait out its lease.
            self._with_database(lambda: self.store.release(job, 0, count=False))
            self._log("RELEASED", job, outcome, "stopped by a second SIGINT")
            return

        decision = decide(
            outcome.status,
            attempt=job.attempts,
            tries=outcome.tries,
            backoff=outcome.backoff,
            release_delay=outcome.delay,
        )
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
        if self.options.memory and outcome.rss_kb / 1024 > self.options.memory:
            self.flags.warm = True
            self.flags.reason = (
                f"--memory={self.options.memory} MB passed "
                f"({outcome.rss_kb // 1024} MB)"
            )

    def _apply(self, job: ReservedJob, outcome: Outcome, decision: Decision) -> None:
        if decision.action is Action.DELETE:
            held = self._with_database(lambda: self.store.delete(job))
            self.stats.done += 1
            self._log("DONE", job, outcome)
        elif decision.action is Action.RELEASE:
            held = self._with_database(lambda: self.store.release(job, decision.delay))
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
            log.warning(
                "job #%d: its lease ran out while it ran and another worker may "
                "hold it now; this worker's outcome (%s) was not recorded",
                job.id,
                decision.action.value,
                extra={"event": "lease_lost"},
            )

    def _fail(self, job: ReservedJob, outcome: Outcome) -> bool:
        from conveyor.queue.payload import Payload

        exception = outcome.error or outcome.summary or outcome.status
        try:
            uuid = Payload.decode(job.payload).uuid
        except Exception:
            uuid = ""
        held = self._with_database(lambda: self.store.fail(job, exception, uuid))
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

    # -- helpers -------------------------------------------------------------

    def _heartbeat(self, job_id: int | None) -> None:
        """Keep the worker's row fresh; a restart request seen here stops the
        worker after the job it runs."""
        if self._quietly(lambda: self.presence.beat(job_id)) and not self.flags.warm:
            self.flags.warm = True
            self.flags.reason = "restart requested"

    def _log(
        self, status: str, job: ReservedJob, outcome: Outcome, detail: str = ""
    ) -> None:
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        log.log(
            _LOG_LEVELS.get(status, logging.INFO),
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

    def _with_database(self, action: Callable[[], T]) -> T:
        """Run ``action``, waiting out a database that went away: log, wait
        (1, 2, 4 ... 30 s), reconnect, try again; give up only when told to
        stop."""
        delay = 1.0
        while True:
            try:
                return action()
            except DBAPIError as exc:
                if not exc.connection_invalidated and not _is_connection_error(exc):
                    raise
                log.warning(
                    "database unreachable (%s); trying again in %.0f s",
                    _first_line(exc),
                    delay,
                    extra={"event": "database_unreachable"},
                )
                self.store.engine.dispose()
                end = time.monotonic() + delay
                while time.monotonic() < end:
                    if self.flags.cold:
                        raise
                    time.sleep(0.1)
                delay = min(delay * 2, 30.0)

    def _quietly(self, action: Callable[[], T]) -> T | None:
        """Bookkeeping that must never stop the worker (heartbeats)."""
        try:
            return action()
        except DBAPIError as exc:
            if _is_connection_error(exc):
                log.warning(
                    "database unreachable (%s); the worker goes on and reconnects",
                    _first_line(exc),
                    extra={"event": "database_unreachable"},
                )
            else:
                log.exception(
                    "bookkeeping failed", extra={"event": "bookkeeping_failed"}
                )
            return None


def _job_name(job: ReservedJob) -> str:
    """The job name from the payload, for the log; never imports anything."""
    from conveyor.queue.payload import Payload

    try:
        return Payload.decode(job.payload).job
    except Exception:
        return "?"


def _first_line(exc: DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_connection_error(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))

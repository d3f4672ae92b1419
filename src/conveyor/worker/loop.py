"""The worker: reserve a job, have the child run it, apply the decision,
log one line; until told to stop."""

from __future__ import annotations

import functools
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from conveyor.config import Settings
from conveyor.drivers.base import ReservedJob
from conveyor.drivers.database import DatabaseStore
from conveyor.exceptions import ConfigError
from conveyor.worker.ahead import ClaimAhead
from conveyor.worker.child import batch_pauses_after
from conveyor.worker.metrics import MinuteCounts
from conveyor.worker.prefetch import DEFAULT_PREFETCH, Prefetch, max_wait
from conveyor.worker.presence import NAME_AFTER, Presence, nameable
from conveyor.worker.process import ChildProcess, Outcome
from conveyor.worker.retry import Action, Decision, decide
from conveyor.worker.signals import SignalHandlers, StopFlags
from conveyor.worker.wakeup import Wakeup

log = logging.getLogger(__name__)
T = TypeVar("T")

_LOG_LEVELS = {"DONE": logging.INFO, "RETRY": logging.WARNING, "FAILED": logging.ERROR}
#: Seconds between two heartbeat checks while a batch of jobs runs.
_TICK_SECONDS = 0.01


@dataclass(frozen=True)
class WorkerOptions:
    """The options of ``conveyor queue work``."""

    queues: tuple[str, ...] = ("default",)
    #: Seconds one attempt may take: more than 0 and less than retry_after.
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
    #: Seconds a running job may go on after a warm stop was asked for
    #: before it is stopped and put back; 0 to let it finish.
    grace: float = 0
    stop_when_empty: bool = False
    once: bool = False
    #: Jobs claimed per round trip (see ``conveyor.worker.prefetch``).
    prefetch: int = DEFAULT_PREFETCH


@dataclass
class WorkerStats:
    done: int = 0
    retried: int = 0
    failed: int = 0
    stop_reason: str = ""
    #: Whether it stopped for a fresh worker to take its place (a restart
    #: request, --max-jobs, --max-time, --memory) rather than for good.
    renew: bool = False
    by_status: dict[str, int] = field(default_factory=dict)


def check_timeout(timeout: float, retry_after: int) -> None:
    """Refuse a ``--timeout`` that a job's lease cannot cover."""
    if not timeout or retry_after <= timeout:
        # No limit is the longest timeout of all: a job could outlive its
        # lease and be taken, and failed or run again, by another worker.
        raise ConfigError(
            f"--timeout={timeout:g} must be more than 0 and less than "
            f"retry_after ({retry_after} s): set [queue] retry_after in "
            "conveyor.toml above it, or a job still running would be handed "
            "to another worker"
        )


class Worker:
    def __init__(
        self,
        settings: Settings,
        options: WorkerOptions,
        store: DatabaseStore,
        *,
        flags: StopFlags | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.store = store
        self.flags = flags if flags is not None else StopFlags()
        self.child = ChildProcess(settings)
        self.presence = Presence(store, list(options.queues))
        self.metrics = MinuteCounts(store)
        self.wakeup = Wakeup(store)
        self.stats = WorkerStats()
        self._started = 0.0
        self._last_reap = 0.0
        self._last_tick = 0.0
        self.prefetch = Prefetch(max(options.prefetch, 1), 0.0)
        self.ahead = ClaimAhead(store, self.prefetch, options.queues, self.presence.id)
        self._defaults = {
            "tries": options.tries,
            "timeout": options.timeout,
            "backoff": list(options.backoff),
        }

    def validate(self) -> None:
        """Refuse options that cannot work, before taking any job."""
        check_timeout(self.options.timeout, self.settings.queue.retry_after)
        if self.options.tries < 0:
            raise ConfigError("--tries must be 0 (no limit) or more")
        if self.options.prefetch < 1:
            raise ConfigError("--prefetch must be 1 or more")

    def _validate_job_timeouts(self) -> None:
        """Refuse job classes whose own timeout would outlive their lease."""
        retry_after = self.settings.queue.retry_after
        for name, timeout in sorted(self.child.job_timeouts.items()):
            if not timeout or timeout >= retry_after:
                raise ConfigError(
                    f"job {name} has timeout = {timeout:g}, which must be more than "
                    f"0 and less than retry_after ({retry_after} s, [queue] "
                    "retry_after in conveyor.toml): otherwise it could run on "
                    "while another worker takes it"
                )

    def run(self) -> WorkerStats:
        """Work until a stop condition; returns what was done."""
        self.validate()
        # Signals are caught from the start: a SIGTERM while the job modules
        # import or the database is away stops the worker cleanly (exit 0)
        # before it takes a job, instead of killing it.
        with SignalHandlers(self.flags):
            if not self._start():
                self.stats.stop_reason = self.flags.reason
                return self.stats
            try:
                self._loop()
            finally:
                self._settle_prefetch()
                self.wakeup.close()
                self.child.stop()
                self._quietly(lambda: self.metrics.flush(force=True))
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

    def _start(self) -> bool:
        """Create the tables, start the job process, check the server and
        register; ``False`` when asked to stop meanwhile. A database that is
        away is waited for, as it is once the worker runs."""
        try:
            self._with_database(self.store.ensure_tables, at_start=True)
            self.child.start()
            self._validate_job_timeouts()
            self.prefetch.wait = max_wait(
                self.settings.queue.retry_after, self._longest_timeout()
            )
            self._with_database(self._check_server, at_start=True)
            self._with_database(self.presence.register, at_start=True)
        except BaseException as exc:
            self.child.stop()
            # A stop signal sent to the whole process group can also end the
            # job process before it ignores signals: that is a stop too.
            if not isinstance(exc, _StoppedAtStart) and not (
                self.flags.warm or self.flags.cold
            ):
                raise
        if self.flags.warm or self.flags.cold:
            self.child.stop()
            self._quietly(self.presence.deregister)
            log.info(
                "worker stopped (%s) before taking a job",
                self.flags.reason,
                extra={"event": "worker_stopped"},
            )
            return False
        self._started = time.monotonic()
        self.wakeup.start()
        log.info(
            "worker started on queue(s) %s",
            ",".join(self.options.queues),
            extra={"event": "worker_started"},
        )
        return True

    def _check_server(self) -> None:
        """Warn about a clock that disagrees with the database server's, and
        about a server that cannot skip locked rows."""
        server = self.store.server_time()
        if server is not None:
            skew = self.store.clock() - server
            limit = self.settings.queue.max_clock_skew
            if abs(skew) > limit:
                log.warning(
                    "this host's clock is %+.1f s off the database server's "
                    "(limit: [queue] max_clock_skew = %d s); due times, leases and "
                    "heartbeats are stamped by each host's clock, so fix it (NTP)",
                    skew,
                    limit,
                    extra={"event": "clock_skew", "skew_s": round(skew, 3)},
                )
        if not self.store.skip_locked:
            log.warning(
                "this server has no SKIP LOCKED (MySQL 8.0.1 and MariaDB 10.6 "
                "have it): claims fall back to plain row locks, so workers wait "
                "for each other's claims; still one worker per job, but slower",
                extra={"event": "no_skip_locked"},
            )

    # -- the loop ------------------------------------------------------------

    def _loop(self) -> None:
        processed = 0
        while True:
            reason = self._stop_reason(processed)
            if reason:
                self.stats.stop_reason = reason
                return
            if not self._have_jobs(processed):
                if self.options.stop_when_empty or self.options.once:
                    self.stats.stop_reason = "queue empty"
                    return
                self._idle()
                continue
            processed += self._run_claimed()
            if self.options.once:
                self.stats.stop_reason = "--once"
                return

    def _have_jobs(self, processed: int) -> bool:
        """Whether claimed jobs wait to start, claiming more when none does
        (after the finished ones are deleted, so a job is never held twice)."""
        self.prefetch.promote_ahead()
        if self.prefetch.waiting and not self.prefetch.fresh():
            # The jobs behind a slow one could now outlive their leases.
            self._give_back()
        if not self.prefetch.waiting:
            remaining = None
            if self.options.once:
                remaining = 1
            elif self.options.max_jobs:
                remaining = self.options.max_jobs - processed
            self._delete_and_claim(self.prefetch.claim_size(remaining))
        return bool(self.prefetch.waiting)

    def _delete_and_claim(self, size: int) -> None:
        """Delete the jobs that ran and claim up to ``size`` more, in one
        transaction."""
        done = self.prefetch.take_done()
        jobs = [job for job, _ in done]
        presence = self.presence
        # The row may still name a job that ran: the claim names anew.
        name_current = not presence.named_sure or presence.named is not None
        tries = 0
        # A claim ahead that failed may have landed unseen: settled here,
        # between batches, where nothing the worker holds is running.
        ahead_in_doubt = self.ahead.in_doubt

        def once() -> tuple[list[bool], list[ReservedJob]]:
            nonlocal tries
            tries += 1
            return self.store.delete_and_reserve(
                jobs,
                self.options.queues,
                presence.id,
                size,
                in_doubt=tries > 1 or ahead_in_doubt,
                name_current=name_current,
            )

        presence.unsure()
        try:
            held, claimed = self._with_database(once)
        except BaseException:
            # Still to delete, by the worker's last act if nothing else.
            self.prefetch.done[:0] = done
            raise
        self.ahead.in_doubt = False
        if len(claimed) == 1:
            presence.noted(claimed[0].id)
        elif name_current or tries > 1 or ahead_in_doubt:
            presence.noted(None)
        else:
            presence.noted(presence.named)
        self._log_done(done, held)
        self.prefetch.claimed(claimed)

    def _limited(self) -> bool:
        """Whether the run is about to end or has a job budget: no claim
        ahead then."""
        return bool(
            self.options.once
            or self.options.max_jobs
            or self.options.max_time
            or self.flags.warm
            or self.flags.cold
        )

    def _stop_reason(self, processed: int) -> str:
        if self.flags.cold or self.flags.warm:
            return self._asked_to_stop()
        if self.options.max_jobs and processed >= self.options.max_jobs:
            self.stats.renew = True
            return f"--max-jobs={self.options.max_jobs} reached"
        elapsed = time.monotonic() - self._started
        if self.options.max_time and elapsed >= self.options.max_time:
            self.stats.renew = True
            return f"--max-time={self.options.max_time:g} reached"
        self._heartbeat(None)
        return self._asked_to_stop() if self.flags.warm else ""

    def _asked_to_stop(self) -> str:
        # A signal after a restart request still stops the worker for good.
        self.stats.renew = self.flags.renew and not self.flags.cold
        return self.flags.reason

    def _longest_timeout(self) -> float:
        """The longest a job may run: ``--timeout`` or a job class's own,
        which the job process caps below ``retry_after``."""
        cap = self.settings.queue.retry_after - 1
        timeouts = [min(t, cap) for t in self.child.job_timeouts.values() if t]
        return max([self.options.timeout, *timeouts])

    def _delete_done(self) -> None:
        """Delete the jobs that ran, in one transaction, and log them."""
        done = self.prefetch.take_done()
        if not done:
            return
        jobs = [job for job, _ in done]
        tries = 0

        def once() -> list[bool]:
            nonlocal tries
            tries += 1
            return self.store.delete_many(jobs)

        try:
            held = self._with_database(once)
        except DBAPIError:
            self._not_deleted(jobs)
            return
        if tries > 1:
            # The connection dropped during a try: did that commit land?
            held = [
                ok
                or self._with_database(functools.partial(self.store.was_deleted, job))
                for ok, job in zip(held, jobs, strict=True)
            ]
        self._log_done(done, held)

    def _log_done(
        self, done: list[tuple[ReservedJob, Outcome]], held: list[bool]
    ) -> None:
        for (job, outcome), still_held in zip(done, held, strict=True):
            self.stats.done += 1
            self._log("DONE", job, outcome)
            if not still_held:
                self._lease_lost(job, Action.DELETE)

    def _not_deleted(self, jobs: list[ReservedJob]) -> None:
        # As for one job: they stay reserved and come back after retry_after.
        log.exception(
            "jobs %s: could not delete them after they ran; they will be "
            "handed out again after retry_after",
            ", ".join(f"#{job.id}" for job in jobs),
            extra={"event": "outcome_not_recorded"},
        )

    def _give_back(self) -> None:
        """Put back at once the claimed jobs not started yet."""
        jobs = self.prefetch.take_waiting()
        if jobs:
            self._with_database(lambda: self.store.release_unstarted(jobs))

    def _settle_prefetch(self) -> None:
        """On the way out: delete what ran and put back what did not start.
        A database that is away now leaves them to come back after their
        lease, as a killed worker's would."""
        self._quietly(lambda: self.ahead.finish(self._log_done))
        self.ahead.close()
        self._quietly(self._delete_done)
        jobs = self.prefetch.take_waiting()
        if jobs:
            self._quietly(lambda: self.store.release_unstarted(jobs))

    def _idle(self) -> None:
        """Wait ``--sleep`` seconds, or until a push wakes the worker (see
        ``wakeup``), still answering signals and restarts."""
        deadline = time.monotonic() + self.options.sleep
        while time.monotonic() < deadline and not (self.flags.warm or self.flags.cold):
            self._heartbeat(None)
            if self.wakeup.wait(min(0.1, max(deadline - time.monotonic(), 0))):
                return

    # -- one job -------------------------------------------------------------

    def _run_claimed(self) -> int:
        """Run the claimed jobs, sent to the job process together, until
        one ends its process or the batch stops early; how many ran."""
        waiting = self.prefetch.waiting
        if self._poisoned(waiting[0]):
            self._fail_poisoned(waiting.popleft())
            return 1
        batch = [waiting[0]]
        # A suspect runs alone, named as running before it starts, so that
        # if it kills this worker too, the crash is charged to it.
        for job in list(waiting)[1:] if not waiting[0].suspect else []:
            if self._poisoned(job) or job.suspect:
                break
            batch.append(job)
        self._with_database(lambda: self.presence.prepare(batch))

        ran = 0
        last = batch[-1]
        outcomes = self.child.run_batch(
            batch,
            self._defaults,
            start_before=self.prefetch.claimed_at + self.prefetch.wait,
            memory_kb=self.options.memory * 1024,
            should_stop=self._must_stop_job,
            on_wait=lambda job, ran_for: self._while_running(
                nameable(job, ran_for, job is last), ran_for
            ),
        )
        # The batch is with the job process now: claim the next meanwhile.
        if self.ahead.worth_it(batch, self._limited()):
            self.ahead.start(batch)
        requeued = False
        try:
            for job, outcome in outcomes:
                waiting.popleft()
                self.prefetch.ran(outcome.seconds)
                requeued |= self._process(job, outcome)
                ran += 1
                if self.prefetch.done_due():
                    self._delete_done()
                if batch_pauses_after("done", outcome.seconds):
                    # After a slow job, look for a restart request before the
                    # next starts, as a worker claiming one job at a time would.
                    self._heartbeat(None, every=0.25)
                # The next job of the batch may be running: it is not named.
                self._while_running(None)
        finally:
            self.ahead.finish(self._log_done)
        if requeued:
            # A job put back to run again goes ahead of those claimed after
            # it, as it would without prefetch: claim again, oldest first.
            self._give_back()
        return ran

    def _while_running(self, job_id: int | None, ran_for: float = 0.0) -> None:
        """Heartbeat, naming ``job_id`` as running (see ``presence``); once
        a stop was asked for, the jobs of the batch not started yet stay so;
        once the running job has run ``ran_for`` seconds, the jobs behind it
        are let go (see ``_let_go_behind``)."""
        if self.flags.warm or self.flags.cold:
            self.child.skip()
        if ran_for >= NAME_AFTER:
            self._let_go_behind()
        # Between fast jobs, a heartbeat's own checks of the clock would cost
        # more than the jobs; every few milliseconds is often enough.
        now = time.monotonic()
        if now - self._last_tick >= _TICK_SECONDS:
            self._last_tick = now
            self._heartbeat(job_id)
            if self.flags.warm or self.flags.cold:
                self.child.skip()

    def _let_go_behind(self) -> None:
        """The running job has run long enough that the job process will
        start no other job of its batch after it (it stops a batch after a
        job of ``BATCH_PAUSE_SECONDS``, a fifth of this): put back at once,
        uncounted, the jobs claimed behind it and the next batch, for other
        workers, and delete the jobs that ran before it, so that none of
        them waits for it to end. Never waits for a database that is away:
        what it could not do is done after the job, as before."""
        self.ahead.finish(self._log_done)
        waiting, ahead = self.prefetch.waiting, self.prefetch.take_ahead()
        behind = [*list(waiting)[1:], *ahead]
        if behind:
            released = self._quietly(lambda: self.store.release_unstarted(behind))
            if released is None:
                self.prefetch.ahead = ahead  # still held: given back later
            else:
                while len(waiting) > 1:
                    waiting.pop()
        done = self.prefetch.take_done()
        if done:
            held = self._quietly(lambda: self.store.delete_many([j for j, _ in done]))
            if held is None:
                self.prefetch.done[:0] = done
            else:
                self._log_done(done, held)

    def _poisoned(self, job: ReservedJob) -> bool:
        max_crashes = self.settings.queue.max_crashes
        return bool(max_crashes and job.crashes >= max_crashes)

    def _fail_poisoned(self, job: ReservedJob) -> None:
        # Its worker died while running it, again and again (the lease ran
        # out or the heartbeat stopped): do not let it kill another.
        reason = (
            f"PoisonJob: its worker died {job.crashes} time(s) while running "
            f"it (killed, out of memory, or its host lost); not tried again "
            f"([queue] max_crashes = {self.settings.queue.max_crashes})"
        )
        outcome = Outcome("crashed", job=_job_name(job), error=reason, summary=reason)
        self._apply(job, outcome, Decision(Action.FAIL))

    def _process(self, job: ReservedJob, outcome: Outcome) -> bool:
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

    def _must_stop_job(self) -> bool:
        """A cold stop, or a warm one whose ``--grace`` ran out."""
        if self.flags.cold:
            return True
        grace = self.options.grace
        if grace and self.flags.warm and time.monotonic() - self.flags.warm_at > grace:
            self.flags.reason += f"; --grace={grace:g} s ran out"
            return True
        return False

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

    def _lease_lost(self, job: ReservedJob, action: Action) -> None:
        log.warning(
            "job #%d: its lease ran out while it ran and another worker may "
            "hold it now; this worker's outcome (%s) was not recorded",
            job.id,
            action.value,
            extra={"event": "lease_lost"},
        )

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

    # -- helpers -------------------------------------------------------------

    def _heartbeat(self, job_id: int | None, *, every: float = 1.0) -> None:
        """Keep the worker's row fresh (at most every ``every`` seconds); a
        restart request seen here stops the worker after the job it runs."""
        if self._quietly(lambda: self.presence.beat(job_id, every=every)):
            self.flags.ask_warm("restart requested", renew=True)
        self._quietly(self.metrics.flush)
        self._release_dead_workers()

    def _release_dead_workers(self) -> None:
        """Now and then, release the jobs of workers whose heartbeat stopped,
        so they need not wait out ``retry_after``."""
        silent_for = self.settings.queue.heartbeat_timeout
        if time.monotonic() - self._last_reap < silent_for / 3:
            return
        self._last_reap = time.monotonic()
        for dead in (
            self._quietly(lambda: self.store.release_dead_workers(silent_for)) or []
        ):
            log.warning(
                "worker %s:%d sent no heartbeat for over %d s and is presumed dead; "
                "released the %d job(s) it held",
                dead.host,
                dead.pid,
                silent_for,
                dead.released,
                extra={"event": "dead_worker", "released": dead.released},
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

    def _with_database(self, action: Callable[[], T], *, at_start: bool = False) -> T:
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
                    raise ConfigError(
                        f"the database refused this worker: {_first_line(exc)}; "
                        "check database_url"
                    ) from None
                if at_start and (self.flags.warm or self.flags.cold):
                    raise _StoppedAtStart from exc
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
                        raise _StoppedAtStart from exc
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


class _StoppedAtStart(Exception):
    """A stop was asked for while the worker waited for its database at
    start; nothing is held yet, so it just stops."""


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


def _first_line(exc: DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_connection_error(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))


#: What a server says to settings that are wrong (a database or role that
#: does not exist, a password refused), as against a server that is down
#: or starting: MySQL's error numbers, PostgreSQL's words (psycopg gives no
#: SQLSTATE for a refused connection).
_REFUSED_MYSQL = {1044, 1045, 1049}
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

"""The worker: reserve a job, have the child run it, apply the decision,
log one line; until told to stop. What becomes of each job is in
``outcomes``, how a database that goes away is ridden out in ``outages``."""

from __future__ import annotations

import functools
import logging
import time

from sqlalchemy.exc import DBAPIError

from conveyor.config import Settings
from conveyor.drivers.base import ReservedJob
from conveyor.drivers.database import DatabaseStore
from conveyor.exceptions import ConfigError
from conveyor.worker.ahead import ClaimAhead
from conveyor.worker.child import batch_pauses_after
from conveyor.worker.metrics import MinuteCounts
from conveyor.worker.options import (
    WorkerOptions,
    WorkerStats,
    check_job_timeouts,
    check_timeout,
)
from conveyor.worker.outages import Outages, StoppedAtStart
from conveyor.worker.outcomes import Outcomes
from conveyor.worker.prefetch import Prefetch, max_wait
from conveyor.worker.presence import NAME_AFTER, Presence, nameable
from conveyor.worker.process import ChildProcess
from conveyor.worker.signals import SignalHandlers, StopFlags
from conveyor.worker.wakeup import Wakeup

log = logging.getLogger(__name__)

#: Seconds between two heartbeat checks while a batch of jobs runs.
_TICK_SECONDS = 0.01


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
        self.outages = Outages(store, self.flags)
        self._started = 0.0
        self._last_reap = 0.0
        self._last_tick = 0.0
        self.prefetch = Prefetch(max(options.prefetch, 1), 0.0)
        self.ahead = ClaimAhead(store, self.prefetch, options.queues, self.presence.id)
        self.outcomes = Outcomes(
            settings,
            options,
            store,
            stats=self.stats,
            metrics=self.metrics,
            flags=self.flags,
            prefetch=self.prefetch,
            child=self.child,
            with_database=self.outages.wait_out,
        )
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
                self.outages.stopping = True
                self._settle_prefetch()
                self.wakeup.close()
                self.child.stop()
                self.outages.quietly(lambda: self.metrics.flush(force=True))
                self.outages.quietly(self.presence.deregister)
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
            self.outages.wait_out(self.store.ensure_tables, at_start=True)
            self.child.start()
            check_job_timeouts(self.child.job_timeouts, self.settings.queue.retry_after)
            self.prefetch.wait = max_wait(
                self.settings.queue.retry_after, self._longest_timeout()
            )
            self.outages.wait_out(self._check_server, at_start=True)
            self.outages.wait_out(self.presence.register, at_start=True)
        except BaseException as exc:
            self.child.stop()
            # A stop signal sent to the whole process group can also end the
            # job process before it ignores signals: that is a stop too.
            if not isinstance(exc, StoppedAtStart) and not (
                self.flags.warm or self.flags.cold
            ):
                raise
        if self.flags.warm or self.flags.cold:
            self.child.stop()
            self.outages.quietly(self.presence.deregister)
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
                    # Delayed jobs may still wait: none is ready, which is
                    # what --stop-when-empty stops on.
                    self.stats.stop_reason = "no job ready"
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
            held, claimed = self.outages.wait_out(once)
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
        self.outcomes.log_done(done, held)
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
            held = self.outages.wait_out(once)
        except DBAPIError:
            self._not_deleted(jobs)
            return
        if tries > 1:
            # The connection dropped during a try: did that commit land?
            held = [
                ok
                or self.outages.wait_out(functools.partial(self.store.was_deleted, job))
                for ok, job in zip(held, jobs, strict=True)
            ]
        self.outcomes.log_done(done, held)

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
            self.outages.wait_out(lambda: self.store.release_unstarted(jobs))

    def _settle_prefetch(self) -> None:
        """On the way out: delete what ran and put back what did not start.
        A database that is away now leaves them to come back after their
        lease, as a killed worker's would."""
        self.outages.quietly(lambda: self.ahead.finish(self.outcomes.log_done))
        self.ahead.close()
        self.outages.quietly(self._delete_done)
        jobs = self.prefetch.take_waiting()
        if jobs:
            self.outages.quietly(lambda: self.store.release_unstarted(jobs))

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
        if self.outcomes.poisoned(waiting[0]):
            self.outcomes.fail_poisoned(waiting.popleft())
            return 1
        batch = [waiting[0]]
        # A suspect runs alone, named as running before it starts, so that
        # if it kills this worker too, the crash is charged to it.
        for job in list(waiting)[1:] if not waiting[0].suspect else []:
            if self.outcomes.poisoned(job) or job.suspect:
                break
            batch.append(job)
        self.outages.wait_out(lambda: self.presence.prepare(batch))

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
                requeued |= self.outcomes.process(job, outcome)
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
            self.ahead.finish(self.outcomes.log_done)
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
        """The running job ran so long that its job process starts no other
        job of the batch after it (``BATCH_PAUSE_SECONDS``): put back the
        jobs claimed behind it and the next batch, uncounted, and delete
        the jobs done before it, so none waits for it. Never waits for a
        database that is away: what fails is done after the job."""
        quietly, store = self.outages.quietly, self.store
        self.ahead.finish(self.outcomes.log_done)
        waiting, ahead = self.prefetch.waiting, self.prefetch.take_ahead()
        behind = [*list(waiting)[1:], *ahead]
        if behind and quietly(lambda: store.release_unstarted(behind)) is None:
            self.prefetch.ahead = ahead  # still held: given back later
        elif behind:
            while len(waiting) > 1:
                waiting.pop()
        done = self.prefetch.take_done()
        held = quietly(
            lambda: store.delete_many([job for job, _ in done]) if done else []
        )
        if held is None:
            self.prefetch.done[:0] = done
        else:
            self.outcomes.log_done(done, held)

    def _must_stop_job(self) -> bool:
        """A cold stop, or a warm one whose ``--grace`` ran out."""
        if self.flags.cold:
            return True
        grace = self.options.grace
        if grace and self.flags.warm and time.monotonic() - self.flags.warm_at > grace:
            self.flags.reason += f"; --grace={grace:g} s ran out"
            return True
        return False

    # -- helpers -------------------------------------------------------------

    def _heartbeat(self, job_id: int | None, *, every: float = 1.0) -> None:
        """Keep the worker's row fresh (at most every ``every`` seconds); a
        restart request seen here stops the worker after the job it runs."""
        if self.outages.quietly(lambda: self.presence.beat(job_id, every=every)):
            self.flags.ask_warm("restart requested", renew=True)
        self.outages.quietly(self.metrics.flush)
        self._release_dead_workers()

    def _release_dead_workers(self) -> None:
        """Now and then, release the jobs of workers whose heartbeat stopped,
        so they need not wait out ``retry_after``."""
        silent_for = self.settings.queue.heartbeat_timeout
        if time.monotonic() - self._last_reap < silent_for / 3:
            return
        self._last_reap = time.monotonic()
        for dead in (
            self.outages.quietly(lambda: self.store.release_dead_workers(silent_for))
            or []
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

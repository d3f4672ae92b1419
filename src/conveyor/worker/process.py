"""The worker's handle on its child process: start it, hand it a job, wait
for the outcome with the job's timeout, kill and replace it when needed."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.config import ENV_DATABASE_URL, Settings
from conveyor.drivers.base import ReservedJob
from conveyor.exceptions import ConfigError
from conveyor.worker.child import batch_pauses_after, settings_to_json
from conveyor.worker.protocol import LineReader, Message, send

log = logging.getLogger(__name__)

_START_TIMEOUT = 60.0
#: How often a wait for a job wakes to look at the stop flags.
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as the child (or its death) told."""

    #: done, release, fail, error, timeout, crashed, invalid, exhausted, stopped
    status: str
    job: str = "?"
    error: str | None = None
    summary: str | None = None
    delay: int = 0
    tries: int = 1
    backoff: tuple[int, ...] = ()
    seconds: float = 0.0
    rss_kb: int = 0


class ChildProcess:
    """One child at a time, started on demand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._reader: LineReader | None = None
        #: The ``timeout`` each job class sets, as the child reported.
        self.job_timeouts: dict[str, float] = {}
        #: Whether the running batch was told to stop early.
        self._skipped = False
        #: Each job class's tries, timeout and backoff, as this child sent.
        self._options: dict[str, Message] = {}

    def start(self) -> None:
        """Start the child and wait until it has imported the job modules;
        raises ``ConfigError`` when it cannot."""
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor.worker.child",
                str(child_read),
                str(child_write),
                str(os.getpid()),
                settings_to_json(self.settings),
            ],
            pass_fds=(child_read, child_write),
            cwd=self.settings.root,
            # A job that reads the settings itself gets the worker's database,
            # even one given with --database.
            env={**os.environ, ENV_DATABASE_URL: self.settings.database_url},
        )
        os.close(child_read)
        os.close(child_write)
        self._to_child = parent_write
        self._reader = LineReader(parent_read)
        self._options = {}

        try:
            hello = self._reader.read(_START_TIMEOUT)
        except EOFError:
            hello = None
        if hello is None or hello["op"] != "ready":
            error = hello.get("error") if hello else "it did not start"
            self.kill()
            raise ConfigError(f"cannot load the job classes: {error}")
        self.job_timeouts = {
            name: float(value) for name, value in hello.get("timeouts", {}).items()
        }

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def run_batch(
        self,
        jobs: Sequence[ReservedJob],
        defaults: Message,
        *,
        start_before: float,
        memory_kb: int,
        should_stop: Callable[[], bool],
        on_wait: Callable[[ReservedJob, float], None],
    ) -> Iterator[tuple[ReservedJob, Outcome]]:
        """Have the child run ``jobs`` in order, sent in one message; yields
        each job with its outcome as it ends. Each job keeps its own timeout,
        counted from its start. The jobs never yielded were not started: the
        child stopped early (see ``skip``), or its process ended (a timeout,
        a crash, a stop), in which case the last job yielded says why.
        ``start_before`` is the ``time.monotonic()`` after which the child
        starts no job but the first. While a job runs, ``on_wait`` is called
        about every 0.2 s with the job and the seconds it has run, at least,
        with no result seen yet. The batch is sent before this returns, so
        the caller may do other work while the child runs it."""
        if not self.running:
            self.start()
        assert self._reader is not None
        self._skipped = False
        request = {
            "op": "batch",
            "jobs": [
                {
                    "id": job.id,
                    "queue": job.queue,
                    "attempt": job.attempts,
                    "payload": job.payload,
                }
                for job in jobs
            ],
            "defaults": defaults,
            "start_before": start_before,
            "memory_kb": memory_kb,
        }
        try:
            send(self._to_child, request)
        except BrokenPipeError:
            return iter([(jobs[0], self._crashed("?"))])
        return self._outcomes(jobs, should_stop, on_wait)

    def _outcomes(
        self,
        jobs: Sequence[ReservedJob],
        should_stop: Callable[[], bool],
        on_wait: Callable[[ReservedJob, float], None],
    ) -> Iterator[tuple[ReservedJob, Outcome]]:
        assert self._reader is not None
        process = self._process
        last = len(jobs) - 1
        for index, job in enumerate(jobs):
            outcome = self._next_outcome(job, index, should_stop, on_wait)
            if outcome is None:
                return
            if index < last and batch_pauses_after(outcome.status, outcome.seconds):
                if self._process is process:
                    # The child stopped the batch there (see
                    # batch_pauses_after); read its word for it before
                    # anything else is asked.
                    with contextlib.suppress(EOFError):
                        self._reader.read(_START_TIMEOUT)
                yield job, outcome
                return
            yield job, outcome
            # Killed (a timeout, a stop) or replaced meanwhile (a failed()
            # hook starts a new one): the rest of the batch died with it.
            if self._process is not process:
                return

    def skip(self) -> None:
        """Ask the child to start no more jobs of the running batch (once)."""
        if self._skipped or not self.running:
            return
        self._skipped = True
        with contextlib.suppress(BrokenPipeError):
            send(self._to_child, {"op": "skip"})

    def _next_outcome(
        self,
        job: ReservedJob,
        index: int,
        should_stop: Callable[[], bool],
        on_wait: Callable[[ReservedJob, float], None],
    ) -> Outcome | None:
        """The outcome of ``job``, the ``index``-th of the batch; ``None``
        when the child skipped it and the rest, or died before starting it
        (then after another job's result: that job is not to blame)."""
        assert self._reader is not None
        try:
            started = self._reader.read(_START_TIMEOUT)
            while started is not None and started["op"] == "options":
                self._learn_options(started)
                started = self._reader.read(_START_TIMEOUT)
        except EOFError:
            if index:
                self._ended_between_jobs()
                return None
            return self._crashed("?")
        if started is None:
            self.kill()
            return Outcome("timeout", summary="the job did not start in time")
        if started["op"] == "skipped":
            return None
        if started["op"] == "result":
            return _outcome(started, started.get("job", "?"), {})
        options = self._options.get(started["job"], {})
        return self._wait_for_result(
            started, options, should_stop, lambda ran_for: on_wait(job, ran_for)
        )

    def _learn_options(self, message: Message) -> None:
        """A job class's tries, timeout and backoff, sent once per class."""
        self._options[message["job"]] = message
        if message.get("warning"):
            log.warning("%s", message["warning"], extra={"event": "timeout_capped"})

    def _ended_between_jobs(self) -> None:
        code = self._process.wait() if self._process is not None else None
        self._process = None
        self._close_pipes()
        log.warning(
            "the job process exited (code %s) between two jobs of a batch; "
            "the jobs it had not started run in a new one",
            code,
            extra={"event": "job_process_exited"},
        )

    def _wait_for_result(
        self,
        started: Message,
        options: Message,
        should_stop: Callable[[], bool],
        on_wait: Callable[[float], None],
    ) -> Outcome:
        assert self._reader is not None
        name = started["job"]
        timeout = float(options.get("timeout") or 0) or None
        # When the child started it (the same monotonic clock), not when the
        # worker got round to reading that.
        begun = min(float(started["at"]), time.monotonic())
        while True:
            waited = time.monotonic() - begun
            if timeout is not None and waited >= timeout:
                self.kill()
                message = f"TimeoutError: the job ran longer than {timeout:g} s"
                return _outcome(
                    {
                        "status": "timeout",
                        "seconds": waited,
                        "summary": message,
                        "error": f"{message}; its process was killed",
                    },
                    name,
                    options,
                )
            step = (
                _POLL_SECONDS
                if timeout is None
                else min(_POLL_SECONDS, timeout - waited)
            )
            try:
                result = self._reader.read(step)
            except EOFError:
                return self._crashed(name, options)
            if result is not None and result["status"] == "done":
                # Tries and backoff matter only to a job that did not succeed.
                return Outcome(
                    "done",
                    name,
                    seconds=result["seconds"] or 0.0,
                    rss_kb=result["rss_kb"],
                )
            if result is not None:
                return _outcome(result, name, options)
            # Read after the pipe was found empty: the job ran at least this
            # long (counted from when the child started it).
            ran_for = time.monotonic() - begun
            if should_stop():
                self.kill()
                return Outcome("stopped", job=name)
            on_wait(ran_for)

    def run_failed_hook(self, job: ReservedJob, error: str, timeout: float) -> Outcome:
        """Run the job's ``failed()`` hook in the child, within ``timeout``."""
        if not self.running:
            self.start()
        assert self._reader is not None
        try:
            send(
                self._to_child,
                {
                    "op": "failed",
                    "id": job.id,
                    "queue": job.queue,
                    "attempt": job.attempts,
                    "payload": job.payload,
                    "error": error,
                },
            )
            message = self._reader.read(timeout or None)
        except (EOFError, BrokenPipeError):
            return self._crashed("?")
        if message is None:
            self.kill()
            return Outcome("timeout", summary="failed() did not finish in time")
        return _outcome(message, "?", {})

    def _crashed(self, name: str, options: Message | None = None) -> Outcome:
        code = self._process.wait() if self._process is not None else None
        self._process = None
        self._close_pipes()
        if code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        summary = f"the job's process {how}"
        return _outcome(
            {"status": "crashed", "summary": summary, "error": summary},
            name,
            options or {},
        )

    def kill(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None
        self._close_pipes()

    def stop(self) -> None:
        """Ask the child to exit, and make sure it does."""
        if self.running:
            try:
                send(self._to_child, {"op": "exit"})
                assert self._process is not None
                self._process.wait(timeout=5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def _close_pipes(self) -> None:
        for fd in (self._to_child, self._reader.fd if self._reader else -1):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_child = -1
        self._reader = None


def _outcome(message: Message, name: str, options: Message) -> Outcome:
    backoff: Any = options.get("backoff") or ()
    return Outcome(
        status=message["status"],
        job=name,
        error=message.get("error"),
        summary=message.get("summary"),
        delay=int(message.get("delay") or 0),
        tries=int(options.get("tries", 1) or 0),
        backoff=tuple(int(b) for b in backoff),
        seconds=float(message.get("seconds") or 0.0),
        rss_kb=int(message.get("rss_kb") or 0),
    )

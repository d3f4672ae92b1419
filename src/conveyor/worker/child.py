"""The child process that runs jobs for a worker.

The worker (the parent) never imports the application's job modules: this
process does, runs one job at a time as the parent asks, and answers with
the outcome. When a job outlives its timeout, the parent kills this process,
which stops the job even inside C code or a blocking read, and starts a new
one. The child ignores SIGINT and SIGTERM, which are the parent's to act on,
and dies with the parent.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from conveyor.config import QueueSettings, Settings
from conveyor.exceptions import JobNotFound, PayloadError
from conveyor.queue.job import FailRequested, JobContext, ReleaseRequested
from conveyor.queue.payload import Payload
from conveyor.queue.registry import JobRegistry
from conveyor.worker.protocol import (
    LineReader,
    Message,
    done_line,
    encode,
    send,
    send_bytes,
    started_line,
)

_PR_SET_PDEATHSIG = 1
#: A job that ran this long ends its batch (see ``batch_pauses_after``).
BATCH_PAUSE_SECONDS = 0.05
#: Seconds between two looks for the worker's ``skip`` during a batch: a
#: look is a system call, dearer than a fast job.
_POLL_EVERY = 0.001


def main(argv: list[str]) -> None:
    read_fd, write_fd, parent_pid = int(argv[0]), int(argv[1]), int(argv[2])
    settings = settings_from_json(argv[3])
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    try:
        registry = JobRegistry.load(settings.jobs, settings.root)
    except Exception as exc:
        send(write_fd, {"op": "broken", "error": _summary(exc)})
        return
    send(
        write_fd,
        {"op": "ready", "jobs": registry.names(), "timeouts": _timeouts(registry)},
    )

    runner = JobRunner(registry, settings)
    reader = LineReader(read_fd)
    while True:
        try:
            message = reader.read(None)
        except EOFError:
            return
        if message is None or message["op"] == "exit":
            return
        if message["op"] == "batch":
            runner.run_batch(message, reader, write_fd)
        elif message["op"] == "failed":
            send(write_fd, runner.run_failed_hook(message))


def _timeouts(registry: JobRegistry) -> dict[str, float]:
    """The job classes that set their own timeout, so the worker can refuse
    one that would outlive its lease before taking any job."""
    found = {}
    for name in registry.names():
        timeout = getattr(registry.resolve(name), "timeout", None)
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            found[name] = float(timeout)
    return found


def settings_to_json(settings: Settings) -> str:
    return json.dumps(
        {
            "database_url": settings.database_url,
            "jobs": list(settings.jobs),
            "root": str(settings.root),
            "queue": vars(settings.queue),
        }
    )


def settings_from_json(text: str) -> Settings:
    raw = json.loads(text)
    return Settings(
        database_url=raw["database_url"],
        jobs=tuple(raw["jobs"]),
        root=Path(raw["root"]),
        queue=QueueSettings(**raw["queue"]),
    )


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the worker dies, so a job never
    runs on after its worker was killed."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


class JobRunner:
    def __init__(self, registry: JobRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self._queue: Any = None
        #: Options by job class name, for the batches' ``defaults`` below.
        self._class_options: dict[str, Message] = {}
        self._defaults: Message = {}
        self._polled_at = 0.0

    def queue_client(self) -> Any:
        if self._queue is None:
            from conveyor.queue.pushing import Queue

            self._queue = Queue(settings=self.settings)
        return self._queue

    def run_batch(self, request: Message, reader: LineReader, write_fd: int) -> None:
        """Run the jobs of a batch in order, each as ``run`` does, with no
        round trip to the worker between them. Before each job after the
        first, stop and send ``skipped`` (how many were left) after a job
        that did not succeed, when the worker asked for it (it is stopping),
        when the batch's start deadline passed (the jobs left could outlive
        their leases), or when this process passed the worker's
        ``--memory``."""
        jobs = request["jobs"]
        defaults = request["defaults"]
        memory_kb = request.get("memory_kb") or 0
        result: Message = {}
        unsent = b""
        for index, job in enumerate(jobs):
            if index and (
                batch_pauses_after(result["status"], result["seconds"])
                or self._must_stop_batch(request, reader)
            ):
                skipped = {"op": "skipped", "count": len(jobs) - index}
                send_bytes(write_fd, unsent + encode(skipped))
                return
            result, unsent = self.run(job, defaults, memory_kb, unsent, write_fd)
        send_bytes(write_fd, unsent)

    def _must_stop_batch(self, request: Message, reader: LineReader) -> bool:
        now = time.monotonic()
        if now > request["start_before"]:
            return True
        memory_kb = request.get("memory_kb") or 0
        if memory_kb and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > memory_kb:
            return True
        if now - self._polled_at < _POLL_EVERY:
            return False
        # The worker sends nothing else while a batch runs.
        self._polled_at = now
        return reader.poll() is not None

    def run(
        self,
        request: Message,
        defaults: Message,
        memory_kb: int,
        unsent: bytes,
        write_fd: int,
    ) -> tuple[Message, bytes]:
        """Run one job: send ``unsent`` (the previous job's result) with
        this one's ``started`` in one write, then run it; its result, and
        that result's line, to be sent before the next job starts or when
        the batch ends. Results come in order, so the first job without one
        is the job that was running when this process died."""
        try:
            payload = Payload.decode(request["payload"])
            job_class = self.registry.resolve(payload.job)
        except (PayloadError, JobNotFound) as exc:
            result = _result("invalid", error=str(exc), summary=str(exc))
            return result, unsent + encode(result)

        options, announce = self._options(payload.job, job_class, defaults)
        # A job's time counts from its start line, constructor included:
        # the worker names a job as running only once it has gone on longer
        # than BATCH_PAUSE_SECONDS since it, trusting the batch to stop
        # after it.
        begun = time.perf_counter()
        started_at = time.monotonic()
        send_bytes(write_fd, unsent + announce + started_line(payload.job, started_at))
        if options["tries"] and request["attempt"] > options["tries"]:
            reason = (
                f"{payload.job} has been attempted {request['attempt'] - 1} time(s) "
                f"and its limit is {options['tries']} (it released itself, or a "
                "worker running it died)"
            )
            result = _result("exhausted", error=reason, summary=reason)
            return result, encode(result)

        job = job_class()
        job.context = JobContext(
            id=request["id"],
            queue=request["queue"],
            attempt=request["attempt"],
            uuid=payload.uuid,
            _pusher=self.queue_client,
        )
        result = self._handle(job, payload, begun)
        if memory_kb:
            result["rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if result["status"] == "done":
            return result, done_line(result["seconds"], result["rss_kb"])
        return result, encode(result)

    def _options(
        self, name: str, job_class: type[Any], defaults: Message
    ) -> tuple[Message, bytes]:
        """The tries, timeout and backoff of a job class, worked out once;
        the line that tells the worker, the first time, else nothing."""
        if defaults != self._defaults:
            self._defaults = defaults
            self._class_options.clear()
        known = self._class_options.get(name)
        if known is not None:
            return known, b""

        options = _job_options(job_class, defaults)
        retry_after = self.settings.queue.retry_after
        if not options["timeout"] or options["timeout"] >= retry_after:
            # The job's own timeout (0 being none) would let it run past its
            # lease; cap it so it is stopped before another worker may take it.
            cap = retry_after - 1 if retry_after > 1 else retry_after / 2
            options["warning"] = (
                f"{name}.timeout ({options['timeout']:g} s) is not between "
                f"0 and retry_after ({retry_after} s); stopping it at {cap:g} s"
            )
            options["timeout"] = cap
        self._class_options[name] = options
        return options, encode({"op": "options", "job": name, **options})

    def _handle(self, job: Any, payload: Payload, started: float) -> Message:
        try:
            job.handle(payload.data)
        except ReleaseRequested as request:
            return _result("release", delay=request.delay, started=started)
        except FailRequested as request:
            reason = str(request) or "failed by the job"
            return _result("fail", error=reason, summary=reason, started=started)
        except BaseException as exc:
            # sys.exit() or a KeyboardInterrupt raised by the job is its
            # error like any other: recorded with its type and traceback,
            # and this process goes on to the next job.
            return _result(
                "error", error=_traceback(exc), summary=_summary(exc), started=started
            )
        return _result("done", started=started)

    def run_failed_hook(self, request: Message) -> Message:
        """Run the job's ``failed(data, error)`` once, if it has one."""
        try:
            payload = Payload.decode(request["payload"])
            job_class = self.registry.resolve(payload.job)
        except (PayloadError, JobNotFound):
            return _result("done")
        hook = getattr(job_class, "failed", None)
        if not callable(hook):
            return _result("done")
        job = job_class()
        job.context = JobContext(
            id=request["id"],
            queue=request["queue"],
            attempt=request["attempt"],
            uuid=payload.uuid,
            _pusher=self.queue_client,
        )
        try:
            hook(job, payload.data, request["error"])
        except BaseException as exc:
            return _result("error", error=_traceback(exc), summary=_summary(exc))
        return _result("done")


def batch_pauses_after(status: str, seconds: float | None) -> bool:
    """Whether a batch stops after this result, so the worker decides what
    runs next: after a job that did not succeed (it may go back in line
    ahead of the rest), and after a slow one (the worker looks for a stop
    or restart request first, as it does between jobs claimed one by one).
    The worker reads the same result, so both sides agree."""
    return status != "done" or (seconds or 0.0) >= BATCH_PAUSE_SECONDS


def _job_options(job_class: type[Any], defaults: Message) -> Message:
    options = dict(defaults)
    for name in ("tries", "timeout", "backoff"):
        value = getattr(job_class, name, None)
        if value is not None:
            options[name] = value
    if isinstance(options["backoff"], (int, float)):
        options["backoff"] = [int(options["backoff"])]
    return options


def _result(
    status: str,
    *,
    error: str | None = None,
    summary: str | None = None,
    delay: int = 0,
    started: float | None = None,
) -> Message:
    return {
        "op": "result",
        "status": status,
        "error": _printable(error),
        "summary": _printable(summary),
        "delay": delay,
        "seconds": None if started is None else time.perf_counter() - started,
        "rss_kb": 0,
    }


def _printable(text: str | None) -> str | None:
    """``text`` with what UTF-8 cannot carry (lone surrogates) escaped, so the
    error survives the pipe and the failed_jobs row."""
    if text is None:
        return None
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _summary(exc: BaseException) -> str:
    """``Type: message``, even for an exception whose ``__str__`` raises."""
    try:
        text = str(exc)
    except Exception:
        text = "<the exception's message could not be rendered>"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        return f"{_summary(exc)}\n(the traceback could not be rendered)"


if __name__ == "__main__":
    main(sys.argv[1:])

"""``conveyor queue work --processes N``: one supervisor, N workers.

Each worker is a fresh ``conveyor queue work`` process (never a fork of the
supervisor), so each one imports the code as it is when it starts. The
supervisor runs no job and holds no database connection; it only starts,
signals, watches and starts again:

- The first SIGTERM or SIGINT: a warm stop of every worker (SIGTERM to
  each, so each finishes its job); the supervisor exits 0 once all have
  exited. A second signal of either kind: a cold stop (SIGINT to each, their
  second signal, so each puts its job back at once).
- A worker that stopped for a fresh one to take its place (``queue
  restart``, ``--max-jobs``, ``--max-time``, ``--memory``) says so with the
  exit code :data:`EXIT_RENEW` and is started again at once.
- A worker that stopped for good (exit code 0: ``--stop-when-empty`` found
  the queues empty, ``--once``, a SIGTERM to that worker alone) is not; the
  supervisor exits when none is left.
- A worker the database refuses (a database or user that does not exist,
  a wrong password) says so with the exit code :data:`EXIT_CONFIG`: all
  share those settings, so the supervisor stops every worker and exits 1
  instead of starting them again forever. A worker that fails on the
  application's code (a job module that does not import) is started
  again, as below: a deploy may fix it.
- A worker that died (killed, or exited with an error) is started again
  after a back-off that grows while it keeps dying young, so a crash loop
  does not spin. Its jobs come back as any dead worker's do: another
  worker sees its heartbeat stop and releases them.

Workers stay in the supervisor's process group, so a terminal's Ctrl-C or
a process manager's group signal reaches them directly too; the
supervisor's forwarded SIGTERM is then a no-op for them (a warm stop asked
twice), and only a second Ctrl-C turns into a cold stop. A worker whose
supervisor dies (SIGKILL) gets a SIGTERM from Linux and stops warmly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.worker.signals import SignalHandlers, StopFlags

log = logging.getLogger(__name__)

#: The exit code of a supervised worker that stopped so that a fresh one
#: takes its place (EX_TEMPFAIL of sysexits.h: "try again").
EXIT_RENEW = 75
#: The exit code of a supervised worker whose database refused its settings
#: (EX_CONFIG of sysexits.h).
EXIT_CONFIG = 78
#: Seconds before a dead worker is started again, by how many times in a
#: row it died young; the last value repeats.
RESTART_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
#: A worker that ran this long before it died is not in a crash loop: its
#: back-off starts again from the first value.
STABLE_AFTER = 60.0
#: How often the supervisor looks at its workers and its stop flags.
_POLL_SECONDS = 0.1

#: How often a cold stop is passed on again while a worker still runs.
_COLD_AGAIN_SECONDS = 1.0

_PR_SET_PDEATHSIG = 1


@dataclass
class Slot:
    """One of the N places a worker runs in, numbered from 1."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    #: Deaths in a row of workers that did not live ``STABLE_AFTER``.
    crashes: int = 0
    #: When to start the next worker (``time.monotonic()``); None: none.
    start_at: float | None = 0.0


class Supervisor:
    """Runs ``command`` (a ``queue work`` command line) in ``processes``
    slots until stopped, or until every worker stopped for good."""

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        flags: StopFlags | None = None,
        backoff: Sequence[float] = RESTART_BACKOFF,
    ) -> None:
        self.command = list(command)
        self.flags = flags if flags is not None else StopFlags()
        self.backoff = tuple(backoff)
        self.slots = [Slot(number) for number in range(1, processes + 1)]
        #: When the warm and the cold stop were passed on (monotonic).
        self._warm_sent: float | None = None
        self._cold_sent: float | None = None
        #: The database refused a worker's settings: the supervisor's exit 1.
        self._refused = False

    def run(self) -> int:
        """Supervise until done; the exit code for the supervisor: 0, or 1
        when the database refused a worker's settings."""
        with SignalHandlers(self.flags, cold_signals=(signal.SIGINT, signal.SIGTERM)):
            log.info(
                "supervisor %d started: %d worker processes",
                os.getpid(),
                len(self.slots),
                extra={"event": "supervisor_started", "processes": len(self.slots)},
            )
            try:
                while self._step():
                    time.sleep(_POLL_SECONDS)
            finally:
                # Only after a fault of the supervisor's own is any still
                # running: let them finish their jobs and go.
                self._stop_all(signal.SIGTERM)
        log.info(
            "supervisor %d stopped (%s)",
            os.getpid(),
            self.flags.reason or "every worker stopped for good",
            extra={"event": "supervisor_stopped"},
        )
        return 1 if self._refused else 0

    def _step(self) -> bool:
        """One look at the flags and the workers; whether any worker runs
        or waits to start."""
        self._forward_stop()
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is not None:
                self._exited(slot, now)
            if self.flags.warm:
                if slot.process is None:
                    slot.start_at = None
            elif slot.start_at is not None and slot.start_at <= now:
                self._start(slot)
        return any(s.process is not None or s.start_at is not None for s in self.slots)

    def _forward_stop(self) -> None:
        """Pass a stop asked of the supervisor on to every worker: SIGTERM
        once for a warm stop; for a cold one, SIGINT (their second signal)
        at the next look and again every second while any runs."""
        now = time.monotonic()
        if self.flags.warm and self._warm_sent is None:
            self._announce("warm")
            self._stop_all(signal.SIGTERM)
            self._warm_sent = now
        elif self.flags.cold and self._warm_sent is not None:
            # A worker handles two pending signals lowest number first: a
            # SIGINT arriving with the SIGTERM would be taken for the first
            # and the SIGTERM ignored, so it is sent after, and again.
            if self._cold_sent is None:
                self._announce("cold")
            elif now - self._cold_sent < _COLD_AGAIN_SECONDS:
                return
            self._stop_all(signal.SIGINT)
            self._cold_sent = now

    def _announce(self, kind: str) -> None:
        log.info(
            "supervisor: %s stop of every worker (%s)",
            kind,
            self.flags.reason,
            extra={"event": "supervisor_stopping", "cold": kind == "cold"},
        )

    def _stop_all(self, signum: signal.Signals) -> None:
        for slot in self.slots:
            if slot.process is not None:
                # A worker that exited already is not signalled (Popen looks
                # first); one that exits meanwhile is no error either.
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signum)

    def _start(self, slot: Slot) -> None:
        slot.process = subprocess.Popen(
            [*self.command, f"--supervised={os.getpid()}"], stdin=subprocess.DEVNULL
        )
        slot.started_at = time.monotonic()
        slot.start_at = None
        log.info(
            "worker %d started: pid %d",
            slot.number,
            slot.process.pid,
            extra={
                "event": "worker_process_started",
                "slot": slot.number,
                "pid": slot.process.pid,
            },
        )

    def _exited(self, slot: Slot, now: float) -> None:
        """Log how the worker of ``slot`` ended and decide whether, and
        when, another takes its place."""
        assert slot.process is not None
        code = slot.process.returncode
        pid = slot.process.pid
        slot.process = None
        ran_for = now - slot.started_at
        extra = {"slot": slot.number, "pid": pid, "exit_code": code}

        if self.flags.warm or code == 0:
            # Stopped as the supervisor asked, or for good: the queues were
            # empty (--stop-when-empty), --once, or a SIGTERM to it alone.
            slot.start_at = None
            log.info(
                "worker %d (pid %d) exited: %s",
                slot.number,
                pid,
                describe_exit(code),
                extra={"event": "worker_process_exited", **extra},
            )
            return
        if code == EXIT_CONFIG:
            slot.start_at = None
            self._refused = True
            self.flags.ask_warm("the database refused a worker's settings")
            log.error(
                "worker %d (pid %d) was refused by the database (its error is "
                "above); every worker shares its settings, so every worker stops",
                slot.number,
                pid,
                extra={"event": "worker_process_refused", **extra},
            )
            return
        if code == EXIT_RENEW:
            slot.crashes = 0
            slot.start_at = now
            log.info(
                "worker %d (pid %d) stopped to be replaced; starting another",
                slot.number,
                pid,
                extra={"event": "worker_process_renewed", **extra},
            )
            return

        slot.crashes = 1 if ran_for >= STABLE_AFTER else slot.crashes + 1
        delay = self.backoff[min(slot.crashes, len(self.backoff)) - 1]
        slot.start_at = now + delay
        log.error(
            "worker %d (pid %d) died: %s after %.0f s; starting another in %g s",
            slot.number,
            pid,
            describe_exit(code),
            ran_for,
            delay,
            extra={"event": "worker_process_died", "restart_in": delay, **extra},
        )


def describe_exit(code: int) -> str:
    """``killed by SIGKILL`` or ``exit code 1``, from a ``Popen`` return
    code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def stop_with_supervisor(supervisor_pid: int) -> None:
    """Have Linux send this worker SIGTERM (a warm stop) when its supervisor
    dies, so no worker runs on unsupervised after a SIGKILL of it."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)

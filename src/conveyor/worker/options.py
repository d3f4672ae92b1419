"""What a worker is told and what it tells back: the options of ``conveyor
queue work``, the counts of a run, and the checks that a ``--timeout`` and
each job class's own timeout fit within a job's lease."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from conveyor.exceptions import ConfigError
from conveyor.worker.prefetch import DEFAULT_PREFETCH


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


def check_job_timeouts(job_timeouts: Mapping[str, float], retry_after: int) -> None:
    """Refuse job classes whose own timeout would outlive their lease."""
    for name, timeout in sorted(job_timeouts.items()):
        if not timeout or timeout >= retry_after:
            raise ConfigError(
                f"job {name} has timeout = {timeout:g}, which must be more than "
                f"0 and less than retry_after ({retry_after} s, [queue] "
                "retry_after in conveyor.toml): otherwise it could run on "
                "while another worker takes it"
            )

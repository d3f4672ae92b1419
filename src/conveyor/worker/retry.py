"""What happens to a job after an attempt: a pure decision the worker then
applies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    DELETE = "delete"
    RELEASE = "release"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: int = 0


#: Outcomes of an attempt that may be retried while tries remain.
RETRYABLE = frozenset({"error", "timeout", "crashed"})


def backoff_for(attempt: int, backoff: Sequence[int]) -> int:
    """Seconds to wait after failed attempt ``attempt`` (1-based); the last
    entry of ``backoff`` repeats."""
    if not backoff:
        return 0
    return int(backoff[min(attempt, len(backoff)) - 1])


def decide(
    outcome: str,
    *,
    attempt: int,
    tries: int,
    backoff: Sequence[int],
    release_delay: int = 0,
    crashes: int = 0,
    max_crashes: int = 0,
) -> Decision:
    """The decision for an attempt that ended in ``outcome``.

    ``tries`` of 0 means no limit. A job that asked to be released is
    released however many tries it used: it did not fail. A job whose
    process died ``max_crashes`` times (this one included in ``crashes``) is
    failed whatever tries remain: it is poison (0: no such limit).
    """
    if outcome == "crashed" and max_crashes and crashes >= max_crashes:
        return Decision(Action.FAIL)
    if outcome == "done":
        return Decision(Action.DELETE)
    if outcome == "release":
        return Decision(Action.RELEASE, release_delay)
    if outcome in RETRYABLE and (tries == 0 or attempt < tries):
        return Decision(Action.RELEASE, backoff_for(attempt, backoff))
    return Decision(Action.FAIL)

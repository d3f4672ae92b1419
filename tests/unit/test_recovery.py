"""Which of a dead worker's jobs counts the attempt and the crash, and when
a heartbeat may name the running job (pure logic; the databases are in
tests/integration/test_prefetch.py)."""

from __future__ import annotations

from conveyor.drivers.base import ReservedJob
from conveyor.drivers.recovery import HeldRow, sort_held
from conveyor.worker.presence import NAME_AFTER, nameable


def test_the_named_job_is_charged_and_the_rest_of_its_claim_cleared() -> None:
    held = [HeldRow(1, "t"), HeldRow(2, "t"), HeldRow(3, "t"), HeldRow(9, "other")]

    assert sort_held(held, 2) == ([2], [1, 3], [9])


def test_with_no_job_named_every_held_job_is_suspect() -> None:
    held = [HeldRow(1, "t"), HeldRow(2, "t")]

    assert sort_held(held, None) == ([], [], [1, 2])
    # A named job the worker no longer held (it was released or deleted)
    # says nothing about the others.
    assert sort_held(held, 7) == ([], [], [1, 2])


def test_a_heartbeat_names_only_a_job_no_other_can_follow_unasked() -> None:
    job = ReservedJob(5, "default", "{}", 1, "t", 0)

    assert nameable(job, 0.01, last_of_batch=False) is None
    assert nameable(job, NAME_AFTER, last_of_batch=False) == 5
    assert nameable(job, 0.01, last_of_batch=True) == 5

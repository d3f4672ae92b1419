"""The contract every job store keeps.

A store holds jobs in named queues. A worker **reserves** a job, which hands
it out to nobody else until the reservation's lease runs out
(``retry_after`` seconds), then **deletes** it when it ran, **releases** it
to run again later, or **fails** it into the failed-job store. Each of those
three takes the reservation it was given and does nothing (returning
``False``) when the job has since been handed to someone else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class NewJob(NamedTuple):
    """A job about to be pushed (a tuple: a bulk makes one per item, and a
    tuple is made in half the time of a frozen dataclass)."""

    queue: str
    payload: str
    #: Epoch seconds (UTC) before which no worker may reserve it.
    available_at: int


@dataclass(frozen=True)
class ReservedJob:
    """A job a worker holds."""

    id: int
    queue: str
    payload: str
    #: How many times it has been reserved, this time included.
    attempts: int
    #: The lease token that delete, release and fail must present.
    reservation: str
    reserved_at: int
    #: How many times a worker died while running it, before this attempt.
    crashes: int = 0
    #: Whether a worker that held it died while it may have been running
    #: it: it runs alone, named as the worker's current job before it starts
    #: (see ``conveyor.drivers.recovery``).
    suspect: bool = False


class JobStore(Protocol):
    def push(self, jobs: Sequence[NewJob]) -> list[int]:
        """Store ``jobs`` in one round trip, atomically; their ids in order."""

    def reserve(self, queue: str) -> ReservedJob | None:
        """Hand out the oldest available job of ``queue`` to this caller
        alone, counting the attempt; ``None`` when there is none."""

    def delete(self, job: ReservedJob) -> bool:
        """Remove a job that ran."""

    def release(self, job: ReservedJob, delay: int) -> bool:
        """Make the job available again in ``delay`` seconds."""

    def fail(self, job: ReservedJob, exception: str) -> bool:
        """Move the job to the failed-job store, in one transaction."""

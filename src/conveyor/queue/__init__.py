"""The queue: what a job is and how it is pushed."""

from __future__ import annotations

from conveyor.queue.job import Job, JobContext
from conveyor.queue.pushing import Queue

__all__ = ["Job", "JobContext", "Queue"]

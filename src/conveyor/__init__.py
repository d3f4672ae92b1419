"""Conveyor: background jobs and database migrations for Python applications."""

from __future__ import annotations

from conveyor.exceptions import ConveyorError
from conveyor.migrations.migration import Migration
from conveyor.queue.job import Job, JobContext
from conveyor.queue.pushing import Queue

__all__ = ["ConveyorError", "Job", "JobContext", "Migration", "Queue", "__version__"]
__version__ = "0.1.0"

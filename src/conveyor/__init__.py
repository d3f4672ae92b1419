"""Conveyor: background jobs and database migrations for Python applications.

The public names are imported on first use, so ``import conveyor`` (and so
every ``conveyor`` command) stays quick.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["ConveyorError", "Job", "JobContext", "Migration", "Queue", "__version__"]
__version__ = "0.1.0"

_EXPORTS = {
    "ConveyorError": "conveyor.exceptions",
    "Job": "conveyor.queue.job",
    "JobContext": "conveyor.queue.job",
    "Migration": "conveyor.migrations.migration",
    "Queue": "conveyor.queue.pushing",
}

if TYPE_CHECKING:
    from conveyor.exceptions import ConveyorError
    from conveyor.migrations.migration import Migration
    from conveyor.queue.job import Job, JobContext
    from conveyor.queue.pushing import Queue


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")

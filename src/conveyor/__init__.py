"""Conveyor: background jobs and database migrations for Python applications."""

from __future__ import annotations

from conveyor.exceptions import ConveyorError
from conveyor.migrations.migration import Migration

__all__ = ["ConveyorError", "Migration", "__version__"]
__version__ = "0.1.0"

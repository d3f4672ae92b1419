"""The migration tool: timestamped files with ``up()`` and ``down()``, run in
batches and recorded in a table of the application's own database."""

from __future__ import annotations

from conveyor.migrations.migration import Database, Migration

__all__ = ["Database", "Migration"]

"""``--pretend``: the SQL a migration would run, with nothing sent to the
database but the reads needed to describe existing tables.

Alembic's offline mode renders the DDL. Offline, Alembic cannot reflect a
table, which SQLite's ``batch_alter_table`` needs to copy it; so pretend
reflects that table from the live database, read-only, and hands it over as
``copy_from``, the parameter Alembic offers for exactly this.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from alembic.operations import BatchOperations, Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection


class PretendOperations(Operations):
    """Alembic operations that write SQL to a buffer instead of running it."""

    def __init__(self, live: Connection, output: io.StringIO) -> None:
        context = MigrationContext.configure(
            dialect=live.dialect, opts={"as_sql": True, "output_buffer": output}
        )
        super().__init__(context)
        self._live = live

    @contextmanager
    def batch_alter_table(
        self, table_name: str, *args: Any, **kwargs: Any
    ) -> Iterator[BatchOperations]:
        if kwargs.get("copy_from") is None and self._live.dialect.name == "sqlite":
            kwargs["copy_from"] = self._reflect(table_name, kwargs.get("schema"))
        with super().batch_alter_table(table_name, *args, **kwargs) as batch:
            yield batch

    def _reflect(self, table_name: str, schema: str | None) -> sa.Table | None:
        inspector = sa.inspect(self._live)
        if not inspector.has_table(table_name, schema=schema):
            # Made by an earlier pending migration: Alembic will say that it
            # cannot describe it offline.
            return None
        return sa.Table(
            table_name, sa.MetaData(), schema=schema, autoload_with=self._live
        )

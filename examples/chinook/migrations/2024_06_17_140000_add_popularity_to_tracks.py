"""A later change to the Chinook schema, written once for every database with
Alembic's operations: a popularity score on tracks, and an index for looking
tracks up by composer."""

from __future__ import annotations

import re

import sqlalchemy as sa

from conveyor import Migration


def chinook_name(name: str, dialect: str) -> str:
    """How the upstream script for ``dialect`` spells ``name``: PascalCase,
    except in snake_case on PostgreSQL (``InvoiceLine`` is ``invoice_line``).

    Each migration keeps its own copy rather than importing a shared one, so
    that editing a helper later cannot change what an old migration does.
    """
    if dialect != "postgresql":
        return name
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


class AddPopularityToTracks(Migration):
    def up(self) -> None:
        track = chinook_name("Track", self.dialect)
        # Nullable: existing rows have no score until the application
        # computes one, and adding a nullable column needs no table rewrite.
        self.schema.add_column(
            track,
            sa.Column(chinook_name("Popularity", self.dialect), sa.Integer()),
        )
        self.schema.create_index(
            self._index_name(), track, [chinook_name("Composer", self.dialect)]
        )

    def down(self) -> None:
        track = chinook_name("Track", self.dialect)
        self.schema.drop_index(self._index_name(), table_name=track)
        # On SQLite, Alembic drops a column by copying the table without it,
        # which only batch mode does; elsewhere this is a plain ALTER TABLE.
        with self.schema.batch_alter_table(track) as batch:
            batch.drop_column(chinook_name("Popularity", self.dialect))

    def _index_name(self) -> str:
        # Follows each upstream script's own naming of the other indexes.
        if self.dialect == "postgresql":
            return "track_composer_idx"
        return "IX_TrackComposer"

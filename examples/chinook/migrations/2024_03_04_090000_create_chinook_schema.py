"""The eleven Chinook tables with their keys, indexes and foreign keys, from
the upstream script for the database at hand."""

from __future__ import annotations

import re

from conveyor import Migration

# Children before parents, so no table is dropped while another still refers
# to it (Employee only refers to itself).
TABLES = (
    "PlaylistTrack",
    "InvoiceLine",
    "Playlist",
    "Invoice",
    "Customer",
    "Employee",
    "Track",
    "Album",
    "Artist",
    "Genre",
    "MediaType",
)


def chinook_name(name: str, dialect: str) -> str:
    """How the upstream script for ``dialect`` spells ``name``: PascalCase,
    except in snake_case on PostgreSQL (``InvoiceLine`` is ``invoice_line``).

    Each migration keeps its own copy rather than importing a shared one, so
    that editing a helper later cannot change what an old migration does.
    """
    if dialect != "postgresql":
        return name
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


class CreateChinookSchema(Migration):
    def up(self) -> None:
        self.db.execute_script(f"sql/{self.dialect}/schema.sql")

    def down(self) -> None:
        for table in TABLES:
            self.schema.drop_table(chinook_name(table, self.dialect))

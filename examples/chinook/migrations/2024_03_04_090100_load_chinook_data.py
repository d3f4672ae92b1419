"""The Chinook rows: 15,607 of them across the eleven tables."""

from __future__ import annotations

import re

from conveyor import Migration

# Children before parents, so no row is deleted while another still refers
# to it.
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


class LoadChinookData(Migration):
    def up(self) -> None:
        self.db.execute_script(f"sql/{self.dialect}/data.sql")

    def down(self) -> None:
        employee = chinook_name("Employee", self.dialect)
        reports_to = chinook_name("ReportsTo", self.dialect)
        # Employees refer to their managers in the same table. MySQL checks
        # foreign keys row by row as a DELETE proceeds, so deleting a manager
        # before the employees who report to them would fail there.
        self.db.execute(f"UPDATE {employee} SET {reports_to} = NULL")
        for table in TABLES:
            self.db.execute(f"DELETE FROM {chinook_name(table, self.dialect)}")

"""Print the row count of every table in the demo's database.

Reads the same settings as the ``conveyor`` command, so ``--database URL``
and ``CONVEYOR_DATABASE_URL`` work here too.
"""

from __future__ import annotations

import sys

import sqlalchemy as sa

from conveyor.config import load_settings
from conveyor.db import create_engine


def main(argv: list[str]) -> None:
    url = argv[argv.index("--database") + 1] if "--database" in argv else None
    engine = create_engine(load_settings(database_url=url).database_url)
    with engine.connect() as connection:
        for name in sorted(sa.inspect(connection).get_table_names()):
            table = sa.table(name)
            count = connection.execute(sa.select(sa.func.count()).select_from(table))
            print(f"{name:<22} {count.scalar_one():>6,} rows")


if __name__ == "__main__":
    main(sys.argv[1:])

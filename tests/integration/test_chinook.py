"""The Chinook example (examples/chinook) run through the CLI on every
database: the upstream schema and data scripts, a later change written with
Alembic's operations, and undoing all of it again."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chinook"

SCHEMA = "2024_03_04_090000_create_chinook_schema"
DATA = "2024_03_04_090100_load_chinook_data"
POPULARITY = "2024_06_17_140000_add_popularity_to_tracks"
MIGRATIONS = (SCHEMA, DATA, POPULARITY)

# Rows per table in the upstream scripts, the same for all three databases
# (derive_sql.py prints them).
EXPECTED_ROWS = {
    "Album": 347,
    "Artist": 275,
    "Customer": 59,
    "Employee": 8,
    "Genre": 25,
    "Invoice": 412,
    "InvoiceLine": 2240,
    "MediaType": 5,
    "Playlist": 18,
    "PlaylistTrack": 8715,
    "Track": 3503,
}

# Upstream values with accents, read back to show that the scripts' text
# reaches every database intact: (table, key column, key, column, value).
NON_ASCII = (
    ("Artist", "ArtistId", 6, "Name", "Antônio Carlos Jobim"),
    ("Track", "TrackId", 379, "Name", "Água de Beber"),
    ("Track", "TrackId", 207, "Composer", "Tom Jobim - Newton Mendoça"),
)


def chinook_name(name: str, database: str) -> str:
    """The upstream spelling on ``database``: snake_case on PostgreSQL,
    PascalCase elsewhere."""
    if database != "postgresql":
        return name
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


def popularity_index(database: str) -> str:
    return "track_composer_idx" if database == "postgresql" else "IX_TrackComposer"


def row_counts(engine: sa.Engine, database: str) -> dict[str, int]:
    counts = {}
    with engine.connect() as connection:
        for table in EXPECTED_ROWS:
            query = sa.select(sa.func.count()).select_from(
                sa.table(chinook_name(table, database))
            )
            counts[table] = connection.execute(query).scalar_one()
    return counts


def read_value(
    engine: sa.Engine,
    database: str,
    table: str,
    key: str,
    key_value: int,
    column: str,
) -> str:
    name = chinook_name
    query = (
        sa.select(sa.column(name(column, database)))
        .select_from(sa.table(name(table, database)))
        .where(sa.column(name(key, database)) == key_value)
    )
    with engine.connect() as connection:
        return str(connection.execute(query).scalar_one())


def chinook_tables(engine: sa.Engine, database: str) -> set[str]:
    wanted = {chinook_name(table, database).lower() for table in EXPECTED_ROWS}
    return all_tables(engine) & wanted


def all_tables(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return {name.lower() for name in sa.inspect(connection).get_table_names()}


def popularity_state(engine: sa.Engine, database: str) -> tuple[bool, bool]:
    """Whether the popularity column and the composer index exist."""
    track = chinook_name("Track", database)
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        columns = {column["name"] for column in inspector.get_columns(track)}
        indexes = {
            index["name"]: index["column_names"]
            for index in inspector.get_indexes(track)
        }
    has_column = chinook_name("Popularity", database) in columns
    composer = [chinook_name("Composer", database)]
    has_index = indexes.get(popularity_index(database)) == composer
    return has_column, has_index


def status(app: Path, database_url: str) -> dict[str, tuple[str, str]]:
    """Each migration's batch and state as ``migrate status`` prints them."""
    result = run_cli(["migrate", "status"], cwd=app, database_url=database_url)
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.stdout.splitlines():
        # Columns: name, batch (blank when pending), status, notes; two or
        # more spaces apart.
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] in MIGRATIONS:
            batch = cells[1] if cells[1].isdigit() else ""
            rows[cells[0]] = (batch, cells[2] if batch else cells[1])
    return rows


def steps(output: str, verb: str) -> list[str]:
    """The migrations a run reports with ``verb`` (DONE or ROLLED BACK), from
    lines like ``Rolling back NAME ... 1.0 ms ROLLED BACK``."""
    pattern = re.compile(rf"^\s*(?:Running|Rolling back) (\S+) \.\.\. .* {verb}$")
    return [
        match.group(1)
        for match in map(pattern.match, output.splitlines())
        if match is not None
    ]


@pytest.mark.slow
def test_chinook_example_migrates_rolls_back_and_resets(
    tmp_path: Path, database_name: str, database_url: str, engine: sa.Engine
) -> None:
    # A copy, so the SQLite file and __pycache__ never land in the repository.
    app = tmp_path / "chinook"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))

    def cli(*args: str) -> str:
        result = run_cli(list(args), cwd=app, database_url=database_url)
        assert result.exit_code == 0, result.output
        return result.stdout

    # Everything at once, as a new user runs it.
    assert steps(cli("migrate"), "DONE") == list(MIGRATIONS)
    assert row_counts(engine, database_name) == EXPECTED_ROWS
    for table, key, key_value, column, value in NON_ASCII:
        read = read_value(engine, database_name, table, key, key_value, column)
        assert read == value
    assert status(app, database_url) == {name: ("1", "Ran") for name in MIGRATIONS}
    assert popularity_state(engine, database_name) == (True, True)

    # One batch held all three, so rollback undoes every down().
    assert steps(cli("migrate", "rollback"), "ROLLED BACK") == list(
        reversed(MIGRATIONS)
    )
    assert chinook_tables(engine, database_name) == set()
    assert status(app, database_url) == {name: ("", "Pending") for name in MIGRATIONS}

    # Again, one batch each; the same counts show down() left nothing behind.
    assert steps(cli("migrate", "--step"), "DONE") == list(MIGRATIONS)
    assert row_counts(engine, database_name) == EXPECTED_ROWS
    assert status(app, database_url) == {
        SCHEMA: ("1", "Ran"),
        DATA: ("2", "Ran"),
        POPULARITY: ("3", "Ran"),
    }

    # Now rollback undoes the last batch only: the column and index go, the
    # rows stay.
    assert steps(cli("migrate", "rollback"), "ROLLED BACK") == [POPULARITY]
    assert popularity_state(engine, database_name) == (False, False)
    assert row_counts(engine, database_name) == EXPECTED_ROWS
    assert status(app, database_url)[POPULARITY] == ("", "Pending")

    assert steps(cli("migrate"), "DONE") == [POPULARITY]
    assert popularity_state(engine, database_name) == (True, True)
    assert status(app, database_url)[POPULARITY] == ("3", "Ran")

    assert steps(cli("migrate", "reset"), "ROLLED BACK") == list(reversed(MIGRATIONS))
    assert chinook_tables(engine, database_name) == set()
    # Only bookkeeping is left: MySQL and MariaDB keep migrations_attempts
    # beside migrations.
    assert all_tables(engine) <= {"migrations", "migrations_attempts"}

"""Regenerate migrations/sql/<dialect>/{schema,data}.sql from the upstream
Chinook scripts.

The upstream scripts create a whole database: they drop and create it, switch
to it, drop every table, then create the tables and insert the rows. A
migration runs inside a database the user already chose, so only the last two
parts are kept: everything from the "Create Tables" section up to "Populate
Tables" becomes schema.sql, and the "Populate Tables" section, copied
byte for byte, becomes data.sql.

    python examples/chinook/derive_sql.py            # write the files
    python examples/chinook/derive_sql.py --check    # exit 1 if they differ
    python examples/chinook/derive_sql.py --source DIR

By default the scripts are read from ../shared/data/chinook next to the
repository. Every step is checked, so a new upstream version that is laid out
differently stops this script instead of producing a broken migration.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# The splitter execute_script uses, so the checks below see the statements
# exactly as the migrations will run them.
from conveyor.migrations.script import first_keyword, split_statements

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[2] / "shared" / "data" / "chinook"
TARGET = HERE / "migrations" / "sql"

SOURCES = {
    "sqlite": "Chinook_Sqlite.sql",
    "postgresql": "Chinook_PostgreSql.sql",
    "mysql": "Chinook_MySql.sql",
}
TABLE_COUNT = 11

# The upstream scripts open each section with a banner comment whose second
# line is the section's title.
_BANNER = "/*****"
_SCHEMA_TITLE = "Create Tables"
_DATA_TITLE = "Populate Tables"

# What the preamble may hold; anything else would be silently lost.
_PREAMBLE_STATEMENT = re.compile(
    r"^(DROP DATABASE|CREATE DATABASE|USE |\\c |DROP TABLE )", re.IGNORECASE
)
_INSERT_HEADER = re.compile(r"^INSERT INTO [`\[\"]?(\w+)")


class DerivationError(Exception):
    """The upstream script is not laid out as this script expects."""


def derive(source: Path) -> tuple[str, str]:
    """The schema and data scripts derived from one upstream script."""
    text = source.read_bytes().decode("utf-8")
    lines = text.splitlines(keepends=True)
    schema_at = _section_start(lines, _SCHEMA_TITLE, source)
    data_at = _section_start(lines, _DATA_TITLE, source)
    if not schema_at < data_at:
        raise DerivationError(f"{source.name}: sections out of order")

    _check_preamble(lines[:schema_at], source)
    header = _header(source, _credit_block(lines))
    schema = header + "".join(lines[schema_at:data_at]).rstrip("\n") + "\n"
    # The rows are the upstream text unchanged, accents and all: the file is
    # decoded and re-encoded as UTF-8, which round-trips exactly.
    data = header + "".join(lines[data_at:])

    _check_statements(schema, {"CREATE", "ALTER"}, source, "schema")
    _check_statements(data, {"INSERT"}, source, "data")
    creates = sum(
        1
        for statement in split_statements(schema)
        if re.search(r"^\s*CREATE TABLE", statement, re.MULTILINE)
    )
    if creates != TABLE_COUNT:
        raise DerivationError(
            f"{source.name}: {creates} CREATE TABLE statements, not {TABLE_COUNT}"
        )
    return schema, data


def row_counts(data: str) -> Counter[str]:
    """Rows per table of a data script, counted from its layout: one
    ``INSERT INTO table ... VALUES`` line, then one line per row."""
    counts: Counter[str] = Counter()
    table = None
    for line in data.splitlines():
        header = _INSERT_HEADER.match(line)
        if header:
            table = header.group(1)
        elif line.startswith("    (") and table is not None:
            counts[table] += 1
    return counts


def _section_start(lines: list[str], title: str, source: Path) -> int:
    found = [
        index
        for index, line in enumerate(lines[:-1])
        if line.startswith(_BANNER) and lines[index + 1].strip() == title
    ]
    if len(found) != 1:
        raise DerivationError(
            f"{source.name}: expected one '{title}' section, found {len(found)}"
        )
    return found[0]


def _check_preamble(lines: list[str], source: Path) -> None:
    in_comment = False
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if in_comment or stripped.startswith("/*"):
            in_comment = not stripped.endswith("*/")
            continue
        if stripped and not _PREAMBLE_STATEMENT.match(stripped):
            raise DerivationError(
                f"{source.name}:{number}: unexpected preamble line {stripped!r}"
            )


def _credit_block(lines: list[str]) -> str:
    """The upstream script's first comment: version, author and licence."""
    start = next(i for i, line in enumerate(lines) if line.startswith("/*"))
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith("*/"))
    return "".join(lines[start : end + 1])


def _header(source: Path, credit: str) -> str:
    return (
        f"-- Derived from {source.name} by examples/chinook/derive_sql.py;\n"
        "-- regenerate it with that script rather than editing it by hand.\n"
        "-- Chinook is MIT-licensed: see examples/chinook/LICENSE-chinook.md.\n"
        f"{credit}\n"
    )


def _check_statements(script: str, allowed: set[str], source: Path, kind: str) -> None:
    for statement in split_statements(script):
        keyword = first_keyword(statement)
        if keyword not in allowed:
            raise DerivationError(
                f"{source.name}: {kind} script would hold a {keyword} statement"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument(
        "--check", action="store_true", help="compare instead of writing"
    )
    args = parser.parse_args(argv)

    stale = []
    for dialect, name in SOURCES.items():
        try:
            schema, data = derive(args.source / name)
        except (OSError, DerivationError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        counts = row_counts(data)
        summary = ", ".join(f"{table} {n}" for table, n in sorted(counts.items()))
        print(f"{dialect}: {len(counts)} tables, {sum(counts.values())} rows")
        print(f"  {summary}")
        for filename, content in (("schema.sql", schema), ("data.sql", data)):
            path = TARGET / dialect / filename
            encoded = content.encode("utf-8")
            if args.check:
                if not path.is_file() or path.read_bytes() != encoded:
                    stale.append(path)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encoded)

    for path in stale:
        print(f"out of date: {path.relative_to(HERE)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

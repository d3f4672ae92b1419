"""``migrate make``: writing a new timestamped migration file from a template.

``create_X_table`` gets a create-table template for ``X`` and
``add_..._to_X_table`` (or any name with ``--table``) an alter template;
every other name a blank one.
"""

from __future__ import annotations

import datetime as dt
import re
from importlib import resources
from pathlib import Path
from string import Template

from conveyor.exceptions import MigrationFileError
from conveyor.migrations.discovery import class_name_for, discover

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_CREATE = re.compile(r"^create_(?P<table>\w+?)_table$")
_ALTER = re.compile(r"^\w+_(?:to|from|in)_(?P<table>\w+?)_table$")
_TIMESTAMP = "%Y_%m_%d_%H%M%S"


def make_migration(
    folder: Path,
    name: str,
    *,
    create: str | None = None,
    table: str | None = None,
    now: dt.datetime | None = None,
    template: str | None = None,
    names: dict[str, str] | None = None,
) -> Path:
    """Write ``folder/YYYY_MM_DD_HHMMSS_name.py`` and return its path.

    ``template`` picks a template by name instead of by ``name`` (as
    ``queue table`` does), and ``names`` fills its other placeholders.
    """
    if not NAME_PATTERN.match(name):
        raise MigrationFileError(
            f"migration name '{name}' must be snake_case: lower-case letters, "
            "digits and single underscores, starting with a letter"
        )
    if create and table:
        raise MigrationFileError("give --create or --table, not both")

    existing = discover(folder).files
    class_name = class_name_for(name)
    for file in existing:
        if class_name_for(file.description) == class_name:
            raise MigrationFileError(
                f"a migration named '{name}' (class {class_name}) already exists: "
                f"{file.path}"
            )

    chosen, table_name = _choose_template(name, create, table)
    stamp = _next_timestamp(now or dt.datetime.now(), [f.timestamp for f in existing])
    source = Template(_read_template(template or chosen)).substitute(
        class_name=class_name, table=table_name or "", **(names or {})
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stamp}_{name}.py"
    with path.open("x", encoding="utf-8") as handle:
        handle.write(source)
    return path


def _choose_template(
    name: str, create: str | None, table: str | None
) -> tuple[str, str | None]:
    if create:
        return "create", create
    if table:
        return "update", table
    if match := _CREATE.match(name):
        return "create", match["table"]
    if match := _ALTER.match(name):
        return "update", match["table"]
    return "blank", None


def _next_timestamp(now: dt.datetime, taken: list[str]) -> str:
    """``now``, or one second past the newest file if that is not earlier,
    so files made within the same second still sort in the order made."""
    stamp = now.replace(microsecond=0)
    if taken:
        newest = dt.datetime.strptime(max(taken), _TIMESTAMP)
        stamp = max(stamp, newest + dt.timedelta(seconds=1))
    return stamp.strftime(_TIMESTAMP)


def _read_template(name: str) -> str:
    files = resources.files("conveyor.migrations") / "templates" / f"{name}.py.tmpl"
    return files.read_text(encoding="utf-8")

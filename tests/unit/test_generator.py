"""migrate make: names, templates and order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from conveyor.exceptions import MigrationFileError
from conveyor.migrations.discovery import discover
from conveyor.migrations.generator import make_migration
from conveyor.migrations.loader import load_migration_class

NOON = dt.datetime(2024, 3, 1, 12, 0, 0, 500)


def test_create_table_name_fills_the_create_template(tmp_path: Path) -> None:
    path = make_migration(tmp_path, "create_users_table", now=NOON)

    assert path.name == "2024_03_01_120000_create_users_table.py"
    source = path.read_text()
    assert "class CreateUsersTable(Migration):" in source
    assert 'self.schema.create_table(\n            "users",' in source
    assert 'self.schema.drop_table("users")' in source
    cls = load_migration_class(discover(tmp_path).files[0])
    assert cls.__name__ == "CreateUsersTable" and cls.can_roll_back()


def test_add_to_table_name_fills_the_alter_template(tmp_path: Path) -> None:
    path = make_migration(tmp_path, "add_votes_to_users_table", now=NOON)

    assert 'batch_alter_table("users")' in path.read_text()


def test_options_choose_the_template(tmp_path: Path) -> None:
    created = make_migration(tmp_path, "first", create="flights", now=NOON)
    altered = make_migration(tmp_path, "second", table="flights", now=NOON)
    blank = make_migration(tmp_path, "third", now=NOON)

    assert '"flights"' in created.read_text() and "create_table" in created.read_text()
    assert 'batch_alter_table("flights")' in altered.read_text()
    assert "pass" in blank.read_text() and "schema" not in blank.read_text()


def test_makes_within_one_second_keep_their_order(tmp_path: Path) -> None:
    names = ["zeta", "alpha", "mid"]
    paths = [make_migration(tmp_path, name, now=NOON) for name in names]

    assert [p.name[:17] for p in paths] == [
        "2024_03_01_120000",
        "2024_03_01_120001",
        "2024_03_01_120002",
    ]
    assert [f.description for f in discover(tmp_path).files] == names


@pytest.mark.parametrize(
    "name", ["CreateUsers", "create-users", "1st_table", "double__underscore", ""]
)
def test_names_must_be_snake_case(tmp_path: Path, name: str) -> None:
    with pytest.raises(MigrationFileError, match="must be snake_case"):
        make_migration(tmp_path, name)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_create_and_table_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationFileError, match="not both"):
        make_migration(tmp_path, "x", create="a", table="b")

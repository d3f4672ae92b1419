"""Case M04: rollback undoes a batch when the user expected one file.

Plain ``migrate rollback`` undoes the last batch, as its help text says;
``--step=N`` undoes exactly the N newest files, whatever their batches; a
step past the first migration undoes everything without error; and ``status``
agrees with the ``migrations`` rows after every step."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from helpers import batches, run_cli, table_names, write_table_migrations


def status_rows(root: Path, database_url: str) -> list[tuple[str, int | None, str]]:
    """``migrate status`` as (name after the timestamp, batch, state) rows."""
    result = run_cli(["migrate", "status"], cwd=root, database_url=database_url)
    assert result.exit_code == 0, result.output
    found = []
    for line in result.stdout.splitlines():
        cells = line.split()
        if not cells or not cells[0].startswith("2024_"):
            continue
        if cells[1].isdigit():
            found.append((cells[0][18:], int(cells[1]), " ".join(cells[2:])))
        else:
            found.append((cells[0][18:], None, " ".join(cells[1:])))
    return found


def assert_status_matches_rows(
    root: Path, database_url: str, engine: sa.Engine, names: list[str]
) -> None:
    """Every recorded migration shows as Ran with its batch, every other one
    of ``names`` as Pending with none."""
    recorded = dict(batches(engine))
    expected = [
        (name, recorded[name], "Ran") if name in recorded else (name, None, "Pending")
        for name in names
    ]
    assert status_rows(root, database_url) == expected


def test_rollback_help_says_it_undoes_the_last_batch() -> None:
    """The help text promises what plain rollback does: the last batch;
    ``--step`` counts migrations, not batches."""
    result = run_cli(["migrate", "rollback", "--help"], cwd=Path.cwd())

    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "Undo the last batch of migrations" in text
    assert "--step N Undo the last N migrations, newest first, whatever" in text
    assert "their batches" in text


def test_rollback_undoes_the_last_batch_then_steps_count_files(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """Three files as batch 1, two as batch 2: rollback undoes batch 2 (two
    files, newest first); migrate again; ``--step=1`` undoes only the newest
    file; ``--step=99`` undoes everything left; status matches the rows each
    time."""
    names = [f"create_{table}" for table in ["a1", "a2", "a3", "b1", "b2"]]
    write_table_migrations(tmp_path, ["a1", "a2", "a3"])
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    write_table_migrations(tmp_path, ["b1", "b2"], start=3)
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    assert [b for _, b in batches(engine)] == [1, 1, 1, 2, 2]
    assert_status_matches_rows(tmp_path, database_url, engine, names)

    result = run_cli(["migrate", "rollback"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert [line.split()[2][18:] for line in result.stdout.splitlines()] == [
        "create_b2",
        "create_b1",
    ]
    assert batches(engine) == [("create_a1", 1), ("create_a2", 1), ("create_a3", 1)]
    assert not {"b1", "b2"} & table_names(engine)
    assert {"a1", "a2", "a3"} <= table_names(engine)
    assert_status_matches_rows(tmp_path, database_url, engine, names)

    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    assert [b for _, b in batches(engine)] == [1, 1, 1, 2, 2]

    result = run_cli(
        ["migrate", "rollback", "--step=1"], cwd=tmp_path, database_url=database_url
    )
    assert result.exit_code == 0, result.output
    assert [line.split()[2][18:] for line in result.stdout.splitlines()] == [
        "create_b2"
    ]
    assert batches(engine) == [
        ("create_a1", 1),
        ("create_a2", 1),
        ("create_a3", 1),
        ("create_b1", 2),
    ]
    assert "b2" not in table_names(engine)
    assert "b1" in table_names(engine)
    assert_status_matches_rows(tmp_path, database_url, engine, names)

    result = run_cli(
        ["migrate", "rollback", "--step=99"], cwd=tmp_path, database_url=database_url
    )
    assert result.exit_code == 0, result.output
    assert [line.split()[2][18:] for line in result.stdout.splitlines()] == [
        "create_b1",
        "create_a3",
        "create_a2",
        "create_a1",
    ]
    assert batches(engine) == []
    assert table_names(engine) == {"migrations"}
    assert_status_matches_rows(tmp_path, database_url, engine, names)

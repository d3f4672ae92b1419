"""``queue table`` writes a migration that creates exactly the tables the
queue and its workers would create on first use, and the queue then works on
them."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from conveyor import Queue
from conveyor.config import QueueSettings
from conveyor.drivers.tables import queue_tables
from conveyor.worker.metrics import metrics_table
from helpers import run_cli


def shape(engine: sa.Engine, table: str) -> dict[str, object]:
    inspector = sa.inspect(engine)
    return {
        "columns": {
            c["name"]: (c["nullable"], type(c["type"]).__name__)
            for c in inspector.get_columns(table)
        },
        "indexes": sorted(
            tuple(i["column_names"]) for i in inspector.get_indexes(table)
        ),
        "unique": sorted(
            tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
        ),
        "primary": inspector.get_pk_constraint(table)["constrained_columns"],
    }


def test_migration_matches_the_tables_made_on_first_use(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    made = run_cli(["queue", "table"], cwd=tmp_path)
    assert made.exit_code == 0, made.output
    assert "create_queue_tables.py" in made.stdout
    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    tables = queue_tables(QueueSettings())
    metrics = metrics_table(tables.jobs.name)
    names = [*tables.metadata.tables, metrics.name]
    from_migration = {t: shape(engine, t) for t in names}

    rolled_back = run_cli(["migrate", "reset"], cwd=tmp_path, database_url=database_url)
    assert rolled_back.exit_code == 0, rolled_back.output
    assert not set(names) & set(sa.inspect(engine).get_table_names())
    with engine.begin() as connection:
        tables.metadata.create_all(connection)
        metrics.create(connection)
    engine.dispose()
    on_first_use = {t: shape(engine, t) for t in names}

    assert from_migration == on_first_use


def test_queue_works_on_migrated_tables(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    run_cli(["queue", "table"], cwd=tmp_path)
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    queue = Queue(database_url)
    job_id = queue.push("SendEmail", {"to": "a@example.com"})
    queue.close()

    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT COUNT(*) FROM jobs")).scalar()
    assert job_id == 1 and count == 1

"""migrate, status, rollback, reset, refresh, fresh and install on every
database, driven through the CLI as a user drives them."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from helpers import (
    batches,
    run_cli,
    table_names,
    write_migration,
    write_table_migrations,
)


def test_migrate_runs_pending_files_in_name_order_as_one_batch(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    write_table_migrations(tmp_path, ["alpha", "beta", "gamma"])

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "DONE" in line]
    assert [line.split()[1][18:] for line in lines] == [
        "create_alpha",
        "create_beta",
        "create_gamma",
    ]
    assert all(" ms DONE" in line for line in lines)
    assert batches(engine) == [
        ("create_alpha", 1),
        ("create_beta", 1),
        ("create_gamma", 1),
    ]
    assert {"alpha", "beta", "gamma", "migrations"} <= table_names(engine)


def test_migrate_with_nothing_pending_says_so(
    tmp_path: Path, database_url: str
) -> None:
    write_table_migrations(tmp_path, ["alpha"])
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0
    assert "Nothing to migrate." in result.stdout


def test_step_gives_each_migration_its_own_batch(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    write_table_migrations(tmp_path, ["alpha", "beta"])

    result = run_cli(["migrate", "--step"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    assert batches(engine) == [("create_alpha", 1), ("create_beta", 2)]


def test_pretend_prints_sql_and_changes_nothing(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    write_table_migrations(tmp_path, ["alpha"])
    write_migration(
        tmp_path / "migrations",
        "2024_01_01_000009_seed_alpha",
        """
        from conveyor import Migration

        class SeedAlpha(Migration):
            def up(self):
                self.db.execute(
                    "INSERT INTO alpha (id, name) VALUES (:id, :name)",
                    {"id": 1, "name": "O'Brien"},
                )

            def down(self):
                self.db.execute("DELETE FROM alpha")
    """,
    )

    result = run_cli(["migrate", "--pretend"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    assert "CREATE TABLE alpha" in result.stdout
    assert "INSERT INTO alpha (id, name) VALUES (1, 'O''Brien')" in result.stdout
    assert table_names(engine) == set()


def test_status_lists_ran_and_pending_with_batches(
    tmp_path: Path, database_url: str
) -> None:
    write_table_migrations(tmp_path, ["alpha"])
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    write_table_migrations(tmp_path, ["beta"], start=1)

    result = run_cli(["migrate", "status"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    rows = {
        line.split()[0][18:]: line
        for line in result.stdout.splitlines()
        if line.strip().startswith("2024_")
    }
    assert rows["create_alpha"].split()[1:3] == ["1", "Ran"]
    assert "Pending" in rows["create_beta"]


def test_status_flags_a_file_edited_after_it_ran(
    tmp_path: Path, database_url: str
) -> None:
    folder = write_table_migrations(tmp_path, ["alpha", "beta"])
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    edited = folder / "2024_01_01_000001_create_beta.py"
    edited.write_text(edited.read_text() + "\n# a later change\n")
    # Line endings and trailing blanks alone are not an edit.
    untouched = folder / "2024_01_01_000000_create_alpha.py"
    untouched.write_bytes(untouched.read_bytes().replace(b"\n", b"  \r\n") + b"\n\n")

    result = run_cli(["migrate", "status"], cwd=tmp_path, database_url=database_url)

    lines = {
        line.split()[0][18:]: line
        for line in result.stdout.splitlines()
        if line.strip().startswith("2024_")
    }
    assert "edited since it ran" in lines["create_beta"]
    assert "edited" not in lines["create_alpha"]


def test_reset_undoes_everything_newest_first(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    write_table_migrations(tmp_path, ["alpha", "beta"])
    run_cli(["migrate", "--step"], cwd=tmp_path, database_url=database_url)

    result = run_cli(["migrate", "reset"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    assert "create_beta" in result.stdout.splitlines()[0]
    assert table_names(engine) == {"migrations"}
    again = run_cli(["migrate", "reset"], cwd=tmp_path, database_url=database_url)
    assert "Nothing to roll back." in again.stdout


def test_refresh_rolls_back_then_migrates(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    write_table_migrations(tmp_path, ["alpha", "beta"])
    run_cli(["migrate", "--step"], cwd=tmp_path, database_url=database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO alpha (id, name) VALUES (1, 'x')"))

    result = run_cli(
        ["migrate", "refresh", "--step=1"], cwd=tmp_path, database_url=database_url
    )
    assert result.exit_code == 0, result.output
    assert batches(engine) == [("create_alpha", 1), ("create_beta", 2)]

    result = run_cli(["migrate", "refresh"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert batches(engine) == [("create_alpha", 1), ("create_beta", 1)]
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT COUNT(*) FROM alpha")).scalar() == 0


def test_fresh_drops_every_table_and_migrates(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    write_table_migrations(tmp_path, ["alpha"])
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))

    refused = run_cli(
        ["migrate", "fresh"], cwd=tmp_path, database_url=database_url, input="n\n"
    )
    assert refused.exit_code == 1
    assert "stray" in table_names(engine)

    result = run_cli(
        ["migrate", "fresh", "--force"], cwd=tmp_path, database_url=database_url
    )
    assert result.exit_code == 0, result.output
    assert table_names(engine) == {"alpha", "migrations"}
    assert batches(engine) == [("create_alpha", 1)]


def test_install_creates_the_migrations_table(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    result = run_cli(["migrate", "install"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    assert "Created table 'migrations'" in result.stdout
    columns = {c["name"] for c in sa.inspect(engine).get_columns("migrations")}
    assert {"id", "migration", "batch", "checksum", "applied_at"} <= columns
    again = run_cli(["migrate", "install"], cwd=tmp_path, database_url=database_url)
    assert "already exists" in again.stdout


def test_table_name_comes_from_the_settings(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    (tmp_path / "conveyor.toml").write_text('[migrations]\ntable = "schema_log"\n')
    write_table_migrations(tmp_path, ["alpha"])

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    assert {"alpha", "schema_log"} <= table_names(engine)
    assert "migrations" not in table_names(engine)


def test_raw_sql_and_scripts_reach_the_database(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    folder = write_table_migrations(tmp_path, ["notes"])
    (folder / "seed.sql").write_text(
        "-- rows with semicolons and percent signs inside strings\n"
        "INSERT INTO notes (id, name) VALUES (1, 'a;b');\n"
        "/* a comment; with a semicolon */\n"
        "INSERT INTO notes (id, name) VALUES (2, '100% sure');\n"
        "INSERT INTO notes (id, name) VALUES (3, 'Zoë: café');\n",
        encoding="utf-8",
    )
    write_migration(
        folder,
        "2024_01_01_000005_seed_notes",
        """
        from conveyor import Migration

        class SeedNotes(Migration):
            def up(self):
                assert self.db.execute_script("seed.sql") == 3
                self.db.execute(
                    "INSERT INTO notes (id, name) VALUES (:id, :name)",
                    [{"id": 4, "name": "four"}, {"id": 5, "name": "five"}],
                )
                count = self.db.execute("SELECT COUNT(*) FROM notes").scalar()
                self.db.execute(
                    "INSERT INTO notes (id, name) VALUES (:id, :name)",
                    {"id": 6, "name": f"{self.dialect}:{count}"},
                )

            def down(self):
                self.db.execute("DELETE FROM notes")
    """,
    )

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    with engine.connect() as connection:
        names = dict(connection.execute(sa.text("SELECT id, name FROM notes")).all())
    family = engine.dialect.name.replace("mariadb", "mysql")
    assert names == {
        1: "a;b",
        2: "100% sure",
        3: "Zoë: café",
        4: "four",
        5: "five",
        6: f"{family}:5",
    }


def test_batch_alter_table_works_everywhere(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    folder = write_table_migrations(tmp_path, ["people"])
    write_migration(
        folder,
        "2024_01_01_000005_add_email_to_people_table",
        """
        import sqlalchemy as sa
        from conveyor import Migration

        class AddEmailToPeopleTable(Migration):
            def up(self):
                with self.schema.batch_alter_table("people") as table:
                    table.add_column(sa.Column("email", sa.String(100)))
                    table.create_index("ix_people_email", ["email"])

            def down(self):
                with self.schema.batch_alter_table("people") as table:
                    table.drop_index("ix_people_email")
                    table.drop_column("email")
    """,
    )

    assert run_cli(["migrate"], cwd=tmp_path, database_url=database_url).exit_code == 0
    columns = {c["name"] for c in sa.inspect(engine).get_columns("people")}
    assert "email" in columns

    preview = run_cli(
        ["migrate", "rollback", "--step=1", "--pretend"],
        cwd=tmp_path,
        database_url=database_url,
    )
    assert preview.exit_code == 0, preview.output
    # SQLite copies the table without the column (its index goes with it);
    # the others drop the index, then the column.
    assert "people" in preview.stdout
    engine.dispose()
    assert "email" in {c["name"] for c in sa.inspect(engine).get_columns("people")}

    result = run_cli(
        ["migrate", "rollback", "--step=1"], cwd=tmp_path, database_url=database_url
    )
    assert result.exit_code == 0, result.output
    engine.dispose()
    columns = {c["name"] for c in sa.inspect(engine).get_columns("people")}
    assert "email" not in columns


def test_rollback_pretend_prints_down_sql_and_changes_nothing(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    write_table_migrations(tmp_path, ["alpha", "beta"])
    run_cli(["migrate"], cwd=tmp_path, database_url=database_url)

    result = run_cli(
        ["migrate", "rollback", "--pretend"], cwd=tmp_path, database_url=database_url
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.index("DROP TABLE beta") < result.stdout.index(
        "DROP TABLE alpha"
    )
    assert {"alpha", "beta"} <= table_names(engine)
    assert len(batches(engine)) == 2


def test_init_then_make_then_migrate(tmp_path: Path, database_url: str) -> None:
    """The quick start of the README, step by step."""
    init = run_cli(["init"], cwd=tmp_path)
    assert init.exit_code == 0
    assert (tmp_path / "conveyor.toml").is_file()
    assert (tmp_path / "migrations").is_dir() and (tmp_path / "jobs").is_dir()
    assert "nothing to do" in run_cli(["init"], cwd=tmp_path).stdout

    made = run_cli(["migrate", "make", "create_users_table"], cwd=tmp_path)
    assert made.exit_code == 0
    assert made.stdout.startswith(f"created {tmp_path / 'migrations'}/")
    again = run_cli(["migrate", "make", "create_users_table"], cwd=tmp_path)
    assert again.exit_code == 1
    assert "already exists" in again.stderr

    result = run_cli(["migrate"], cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert "create_users_table ... " in result.stdout

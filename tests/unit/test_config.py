"""Where settings come from, and which wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config import load_settings
from conveyor.exceptions import ConfigError


def test_defaults_without_any_file(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, environ={})

    assert settings.database_url == "sqlite:///conveyor.db"
    assert settings.migrations_path == tmp_path / "migrations"
    assert settings.jobs == ("jobs",)
    assert settings.root == tmp_path
    assert settings.migrations.table == "migrations"
    assert settings.source is None


def test_file_then_environment_then_option(tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text(
        'database_url = "sqlite:///from-file.db"\nmigrations = "db/migrations"\n'
    )
    from_file = load_settings(cwd=tmp_path, environ={})
    from_env = load_settings(
        cwd=tmp_path, environ={"CONVEYOR_DATABASE_URL": "sqlite:///env.db"}
    )
    from_option = load_settings(
        cwd=tmp_path,
        environ={"CONVEYOR_DATABASE_URL": "sqlite:///env.db"},
        database_url="sqlite:///option.db",
    )

    assert from_file.database_url == "sqlite:///from-file.db"
    assert from_file.migrations_path == tmp_path / "db" / "migrations"
    assert from_env.database_url == "sqlite:///env.db"
    assert from_option.database_url == "sqlite:///option.db"


def test_migrations_table_form_and_explicit_config_path(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "settings.toml"
    config.parent.mkdir()
    config.write_text(
        '[migrations]\npath = "schema"\ntable = "schema_log"\nlock_timeout = 5\n'
    )

    settings = load_settings(config_path=config, cwd=tmp_path, environ={})

    assert settings.migrations_path == config.parent / "schema"
    assert settings.migrations.table == "schema_log"
    assert settings.migrations.lock_timeout == 5.0
    assert settings.source == config


def test_pyproject_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.conveyor]\n'
        'database_url = "postgresql://db/app"\n'
    )

    settings = load_settings(cwd=tmp_path, environ={})

    assert settings.database_url == "postgresql://db/app"
    assert settings.source == tmp_path / "pyproject.toml"


def test_pyproject_without_conveyor_table_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\n')

    assert load_settings(cwd=tmp_path, environ={}).source is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("database_url = \n", "not valid TOML"),
        ('databse_url = "x"\n', "unknown key 'databse_url'"),
        ("[migrations]\ntabel = 'x'\n", "[migrations]: unknown key 'tabel'"),
        ("[migrations]\nlock_timeout = -1\n", "'lock_timeout' must be a number"),
        ("database_url = 5\n", "'database_url' must be a non-empty string"),
        ("queue = 3\n", "[queue] must be a table"),
        ("[queue]\nretry_afer = 5\n", "[queue]: unknown key 'retry_afer'"),
        ("jobs = []\n", "'jobs' must be a folder or package name"),
    ],
)
def test_bad_settings_name_the_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "conveyor.toml").write_text(text)

    with pytest.raises(ConfigError) as caught:
        load_settings(cwd=tmp_path, environ={})

    assert str(caught.value).startswith(str(tmp_path / "conveyor.toml"))
    assert message in str(caught.value)


def test_queue_table_and_job_sources(tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text(
        'jobs = ["jobs", "myapp.tasks"]\n[queue]\nretry_after = 300\ndefault = "mail"\n'
    )

    settings = load_settings(cwd=tmp_path, environ={})

    assert settings.jobs == ("jobs", "myapp.tasks")
    assert settings.queue.retry_after == 300
    assert settings.queue.default == "mail"
    assert settings.queue.table == "jobs"

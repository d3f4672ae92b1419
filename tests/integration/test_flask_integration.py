"""``conveyor.integrations.flask``: settings from ``app.config``, a queue for
views, the dashboard under a prefix, ``flask conveyor ...``, and jobs that
run inside the application's app context."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa
from flask import Flask

from conveyor.integrations.flask import Conveyor, settings_from_config
from helpers import fill_every_state, table, write_table_migrations

APP = """
    import os

    from flask import Flask

    from conveyor.integrations.flask import Conveyor

    conveyor = Conveyor()


    def create_app():
        app = Flask(__name__)
        app.config.update(
            CONVEYOR_DATABASE_URL=os.environ["TEST_DATABASE_URL"],
            CONVEYOR_JOBS="tasks",
            CONVEYOR_QUEUE={"default": "web"},
            CONVEYOR_DASHBOARD_PREFIX="/ops",
            GREETING="hello from the config",
        )
        conveyor.init_app(app)

        @app.post("/signup")
        def signup():
            return str(conveyor.queue.push("Greet", {"to": "zoe"}))

        return app
"""

TASK = """
    from pathlib import Path

    from flask import current_app

    from conveyor.integrations.flask import AppJob


    class Greet(AppJob):
        def handle(self, data):
            greeting = current_app.config["GREETING"]
            line = f"{greeting} to {data['to']} by {self.app.name}"
            Path(current_app.root_path, "greeted.txt").write_text(line)
"""


@pytest.fixture
def flask_app(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """An application folder: ``app.py`` (a factory) and ``tasks/greet.py``."""
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "greet.py").write_text(textwrap.dedent(TASK))
    monkeypatch.setenv("TEST_DATABASE_URL", database_url)
    return tmp_path


def load(folder: Path) -> ModuleType:
    name = f"app_{id(folder)}"
    spec = importlib.util.spec_from_file_location(name, folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flask_cli(folder: Path, *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "conveyor", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CONVEYOR_DATABASE_URL": "sqlite:///not-this-one.db"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_views_get_a_queue_on_the_configured_database(
    flask_app: Path, database_url: str, engine: sa.Engine
) -> None:
    app: Flask = load(flask_app).create_app()

    response = app.test_client().post("/signup")

    assert response.status_code == 200
    [row] = table(engine, "jobs")
    assert row["id"] == int(response.get_data(as_text=True))
    assert row["queue"] == "web"
    app.extensions["conveyor"].queue.close()


def test_the_dashboard_is_mounted_under_the_prefix(
    flask_app: Path, database_url: str
) -> None:
    fill_every_state(database_url)
    app: Flask = load(flask_app).create_app()
    client = app.test_client()

    overview = client.get("/ops/")
    assert overview.status_code == 200
    page = overview.get_data(as_text=True)
    assert 'href="/ops/static/dashboard.css' in page and 'href="/ops/failed"' in page
    assert client.get("/ops/static/dashboard.js").status_code == 200
    assert client.get("/signup").status_code == 405
    assert client.get("/failed").status_code == 404
    app.extensions["conveyor"].queue.close()


def test_flask_conveyor_commands_use_the_application_settings(
    flask_app: Path, database_url: str
) -> None:
    write_table_migrations(flask_app, ["alpha"])

    flask_cli(flask_app, "migrate")
    assert "ran" in flask_cli(flask_app, "migrate", "status").lower()
    app: Flask = load(flask_app).create_app()
    app.test_client().post("/signup")
    app.extensions["conveyor"].queue.close()
    status = flask_cli(flask_app, "queue", "status")
    assert "web" in status

    flask_cli(flask_app, "queue", "work", "--queue", "web", "--stop-when-empty")

    greeted = (flask_app / "greeted.txt").read_text()
    assert greeted == "hello from the config to zoe by app"
    assert not (flask_app / "not-this-one.db").exists()


@pytest.mark.databases("sqlite")
def test_flask_conveyor_workers_under_a_supervisor_use_the_application_too(
    flask_app: Path, database_url: str, engine: sa.Engine
) -> None:
    """``--processes 2``: the workers are fresh ``flask conveyor`` processes,
    so they get the application's database, queue and job folder."""
    app: Flask = load(flask_app).create_app()
    app.test_client().post("/signup")
    app.extensions["conveyor"].queue.close()

    flask_cli(flask_app, "queue", "work", "--processes=2", "--stop-when-empty")

    greeted = (flask_app / "greeted.txt").read_text()
    assert greeted == "hello from the config to zoe by app"
    assert table(engine, "jobs") == []
    assert not (flask_app / "not-this-one.db").exists()


@pytest.mark.databases("sqlite")
def test_settings_from_config_over_the_file_and_environment(
    tmp_path: Path, database_name: str
) -> None:
    (tmp_path / "conveyor.toml").write_text(
        'database_url = "sqlite:///file.db"\n[queue]\nretry_after = 120\n'
    )
    environ = {"CONVEYOR_DATABASE_URL": "sqlite:///env.db"}

    from_file = settings_from_config({}, tmp_path, environ={})
    from_env = settings_from_config({}, tmp_path, environ=environ)
    from_app = settings_from_config(
        {
            "CONVEYOR_DATABASE_URL": "sqlite:///app.db",
            "CONVEYOR_MIGRATIONS": "db/migrations",
        },
        tmp_path,
        environ=environ,
    )

    assert from_file.database_url == "sqlite:///file.db"
    assert from_file.queue.retry_after == 120
    assert from_env.database_url == "sqlite:///env.db"
    assert from_app.database_url == "sqlite:///app.db"
    assert from_app.migrations_path == tmp_path / "db" / "migrations"


@pytest.mark.databases("sqlite")
def test_init_app_in_a_factory(tmp_path: Path, database_url: str) -> None:
    conveyor = Conveyor()
    apps = []
    for name in ("one", "two"):
        app = Flask(name, root_path=str(tmp_path))
        app.config["CONVEYOR_DATABASE_URL"] = f"sqlite:///{tmp_path / name}.db"
        conveyor.init_app(app)
        apps.append(app)

    for app in apps:
        with app.app_context():
            conveyor.queue.push("Anything", {})
            assert conveyor.settings.database_url.endswith(f"{app.name}.db")
        app.extensions["conveyor"].queue.close()
    assert "conveyor" in apps[0].cli.commands


@pytest.mark.databases("sqlite")
def test_processes_of_one_application_share_dashboard_sessions(
    tmp_path: Path, database_url: str
) -> None:
    def process() -> Flask:
        app = Flask("shop", root_path=str(tmp_path))
        app.config.update(
            SECRET_KEY="the shop's key",
            CONVEYOR_DATABASE_URL=database_url,
            CONVEYOR_DASHBOARD_PREFIX="/ops",
        )
        Conveyor(app)
        return app

    first, second = process().test_client(), process().test_client()
    page = first.get("/ops/failed").get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    cookie = first.get_cookie("conveyor_dashboard")
    assert cookie is not None
    second.set_cookie("conveyor_dashboard", cookie.value)

    flushed = second.post("/ops/failed/flush", data={"csrf_token": found.group(1)})

    assert flushed.status_code == 303

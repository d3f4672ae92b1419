"""Fixtures shared by every kind of test.

Each test that asks for ``database_url`` runs once per database: SQLite, and
PostgreSQL and MariaDB/MySQL at the servers named by
``CONVEYOR_TEST_POSTGRESQL_URL`` and ``CONVEYOR_TEST_MYSQL_URL``. Each run gets
a database of its own (a file, a schema, a database) dropped afterwards.
A server that cannot be reached skips its runs on a developer's machine and
fails the whole session when ``CI=true``: CI never silently skips a database.
``CONVEYOR_TEST_DATABASES=sqlite`` narrows the set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor import Queue
from conveyor.db import create_engine
from helpers import Spawn, WorkerProcess, start_worker, write_demo_app

SERVER_URLS = {
    "postgresql": os.environ.get(
        "CONVEYOR_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get(
        "CONVEYOR_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"
    ),
}
ALL_DATABASES = ("sqlite", "postgresql", "mysql")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def selected_databases() -> tuple[str, ...]:
    raw = os.environ.get("CONVEYOR_TEST_DATABASES", ",".join(ALL_DATABASES))
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    unknown = set(names) - set(ALL_DATABASES)
    if unknown:
        raise pytest.UsageError(f"CONVEYOR_TEST_DATABASES: unknown {sorted(unknown)}")
    return names


_reachable: dict[str, str | None] = {}


def server_problem(name: str) -> str | None:
    """Why the server for ``name`` cannot be used, or None if it can."""
    if name not in _reachable:
        try:
            engine = create_engine(SERVER_URLS[name])
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            engine.dispose()
            _reachable[name] = None
        except Exception as exc:  # any failure means unusable
            _reachable[name] = f"{name} at {SERVER_URLS[name]}: {exc}".splitlines()[0]
    return _reachable[name]


def pytest_sessionstart(session: pytest.Session) -> None:
    if not IN_CI:
        return
    problems = [
        problem
        for name in selected_databases()
        if name != "sqlite" and (problem := server_problem(name))
    ]
    if problems:
        raise pytest.UsageError(
            "CI=true and a database server is unreachable: " + "; ".join(problems)
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_name" not in metafunc.fixturenames:
        return
    wanted = selected_databases()
    marker = metafunc.definition.get_closest_marker("databases")
    if marker is not None:
        wanted = tuple(name for name in wanted if name in marker.args)
    metafunc.parametrize("database_name", wanted, scope="function")


@pytest.fixture
def database_url(database_name: str, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database of its own, for this test alone."""
    if database_name == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return

    problem = server_problem(database_name)
    if problem:
        pytest.skip(problem)
    scratch = f"conveyor_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(SERVER_URLS[database_name])
    base = admin.url
    with admin.connect() as connection:
        if database_name == "postgresql":
            connection.execute(sa.text(f"CREATE SCHEMA {scratch}"))
            url = base.update_query_dict({"options": f"-csearch_path={scratch}"})
        else:
            connection.execute(sa.text(f"CREATE DATABASE {scratch}"))
            url = base.set(database=scratch)
        connection.commit()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            if database_name == "postgresql":
                connection.execute(sa.text(f"DROP SCHEMA {scratch} CASCADE"))
            else:
                connection.execute(sa.text(f"DROP DATABASE {scratch}"))
            connection.commit()
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def queue(database_url: str) -> Iterator[Queue]:
    """A ``Queue`` on the test's database, its tables created."""
    client = Queue(database_url)
    client.store.ensure_tables()
    yield client
    client.close()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """An application folder with the jobs of ``helpers.DEMO_JOBS``."""
    return write_demo_app(tmp_path)


@pytest.fixture
def spawn(app: Path, database_url: str) -> Iterator[Spawn]:
    """Start workers in ``app``: ``spawn(*options, url=..., env=...)``; each
    is killed, with its group, at the end."""
    started: list[WorkerProcess] = []

    def start(
        *options: str, url: str = database_url, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        log_path = app / f"worker-{len(started) + 1}.log"
        worker = start_worker(app, url, options, log_path, env)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()

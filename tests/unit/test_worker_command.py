"""The command line a supervisor (``queue work --processes N``) gives each
of its workers."""

from __future__ import annotations

import sys

import click
import pytest

from conveyor.cli.options import META_SETTINGS
from conveyor.cli.work_command import _worker_command, work_command
from conveyor.config import Settings


def command_for(*args: str, meta: dict[str, object] | None = None) -> list[str]:
    ctx = click.Context(work_command, info_name="work")
    ctx.meta.update(meta or {})
    with ctx:
        work_command.parse_args(ctx, list(args))
        return _worker_command(ctx)


def test_the_options_given_are_passed_on_but_processes() -> None:
    command = command_for(
        "--processes",
        "4",
        "--queue=high,default",
        "--timeout",
        "30",
        "--stop-when-empty",
        "--max-jobs=100",
        "--database",
        "sqlite:///app.db",
        "-v",
    )

    assert command == [
        sys.executable,
        "-m",
        "conveyor",
        "queue",
        "work",
        "--queue=high,default",
        "--timeout=30.0",
        "--max-jobs=100",
        "--stop-when-empty",
        "--database=sqlite:///app.db",
        "-v",
    ]


def test_defaults_are_left_to_the_workers() -> None:
    assert command_for("--processes=2") == [
        sys.executable,
        "-m",
        "conveyor",
        "queue",
        "work",
    ]


def test_under_flask_the_workers_load_the_application_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_FLASK_APP", "/srv/app.py:create_app")
    settings = Settings()

    command = command_for("--processes=2", meta={META_SETTINGS: settings})

    assert command[1:7] == [
        "-m",
        "flask",
        "--app",
        "/srv/app.py:create_app",
        "conveyor",
        "queue",
    ]

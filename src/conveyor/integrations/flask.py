"""Conveyor in a Flask application, in one line::

    from conveyor.integrations.flask import Conveyor

    conveyor = Conveyor(app)            # or conveyor.init_app(app) in a factory

    @app.post("/signup")
    def signup():
        conveyor.queue.push("SendWelcomeEmail", {"to": request.form["email"]})

Settings come from ``app.config``, over ``conveyor.toml`` in the
application's folder (or the file ``CONVEYOR_CONFIG`` names) and the
``CONVEYOR_DATABASE_URL`` environment variable:

``CONVEYOR_DATABASE_URL``, ``CONVEYOR_JOBS``, ``CONVEYOR_MIGRATIONS``
    as ``database_url``, ``jobs`` and ``migrations`` in ``conveyor.toml``;
``CONVEYOR_QUEUE``
    a dict like the ``[queue]`` table;
``CONVEYOR_DASHBOARD_PREFIX``
    a path such as ``"/conveyor"`` to mount the dashboard at;
``CONVEYOR_DASHBOARD_TOKEN``
    the token its users sign in with (else ``CONVEYOR_DASHBOARD_TOKEN`` in
    the environment; with neither, it answers local clients only).

``flask conveyor ...`` runs the ``conveyor`` commands on these settings'
database. Jobs that subclass :class:`AppJob` run inside the application's
app context, so they reach ``current_app.config`` and its extensions.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from flask import Flask, current_app, has_app_context
from flask.cli import ScriptInfo

from conveyor.cli import ConveyorGroup
from conveyor.cli.options import META_SETTINGS, configure_logging
from conveyor.config import (
    CONFIG_FILE,
    ENV_DATABASE_URL,
    Settings,
    read_config_file,
    settings_from_mapping,
)
from conveyor.queue.job import Job
from conveyor.queue.pushing import Queue

__all__ = ["AppJob", "Conveyor", "settings_from_config"]

#: Set by ``flask conveyor`` for the worker's job process: how it imports the
#: application (Flask's ``--app`` value).
ENV_APP = "CONVEYOR_FLASK_APP"

_CONFIG_KEYS = {
    "CONVEYOR_DATABASE_URL": "database_url",
    "CONVEYOR_JOBS": "jobs",
    "CONVEYOR_MIGRATIONS": "migrations",
    "CONVEYOR_QUEUE": "queue",
}

F = TypeVar("F", bound=Callable[..., Any])


def settings_from_config(
    config: Mapping[str, Any], root: Path, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from a Flask config: its ``CONVEYOR_*`` keys, over
    ``CONVEYOR_DATABASE_URL`` in the environment, over the settings file."""
    environ = os.environ if environ is None else environ
    named = config.get("CONVEYOR_CONFIG")
    default = root / CONFIG_FILE
    path = Path(named) if named else (default if default.is_file() else None)
    raw = dict(read_config_file(path)) if path is not None else {}
    if environ.get(ENV_DATABASE_URL):
        raw["database_url"] = environ[ENV_DATABASE_URL]
    for key, name in _CONFIG_KEYS.items():
        if config.get(key) is not None:
            raw[name] = config[key]
    base = path.parent if path is not None else root
    return settings_from_mapping(raw, root=base, source=path)


@dataclass(frozen=True)
class ConveyorState:
    """What ``app.extensions["conveyor"]`` holds."""

    settings: Settings
    queue: Queue


class Conveyor:
    """The Flask extension: a :class:`~conveyor.Queue` for views, the
    ``flask conveyor`` commands and, if asked, the dashboard."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = settings_from_config(app.config, Path(app.root_path))
        app.extensions["conveyor"] = ConveyorState(settings, Queue(settings=settings))
        app.cli.add_command(flask_command)

        prefix = app.config.get("CONVEYOR_DASHBOARD_PREFIX")
        if prefix:
            mount_dashboard(app, prefix, settings)

    @property
    def state(self) -> ConveyorState:
        state: ConveyorState = current_app.extensions["conveyor"]
        return state

    @property
    def queue(self) -> Queue:
        """The current application's queue."""
        return self.state.queue

    @property
    def settings(self) -> Settings:
        return self.state.settings


def mount_dashboard(app: Flask, prefix: str, settings: Settings) -> None:
    """Serve the dashboard at ``prefix`` of ``app``, as its own WSGI app."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from conveyor.dashboard import create_app, token_from_environment

    token = app.config.get("CONVEYOR_DASHBOARD_TOKEN") or token_from_environment()
    host_key = app.config.get("SECRET_KEY")
    dashboard = create_app(
        settings, token=token, host_key=str(host_key) if host_key else None
    )
    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, {"/" + prefix.strip("/"): dashboard}
    )


class _FlaskConveyorGroup(ConveyorGroup):
    """``conveyor``'s commands, on the database the application's settings
    name unless ``--database`` says otherwise."""

    def invoke(self, ctx: click.Context) -> Any:
        configure_logging(verbose=False)
        info = ctx.ensure_object(ScriptInfo)
        settings: Settings = info.load_app().extensions["conveyor"].settings
        ctx.meta[META_SETTINGS] = settings
        # The worker's job process imports the application the same way,
        # from the settings' folder: a path to a file must not depend on the
        # folder the command was started from.
        if info.app_import_path:
            module, colon, name = info.app_import_path.partition(":")
            if os.sep in module or module.endswith(".py"):
                module = os.path.abspath(module)
            os.environ[ENV_APP] = module + colon + name
        return super().invoke(ctx)


@click.group("conveyor", cls=_FlaskConveyorGroup)
def flask_command() -> None:
    """Conveyor: queue workers, failed jobs, migrations, the dashboard."""


# -- jobs in the app context ------------------------------------------------------


@functools.cache
def _application() -> Flask:
    return ScriptInfo(
        app_import_path=os.environ.get(ENV_APP) or os.environ.get("FLASK_APP"),
        set_debug_flag=False,
    ).load_app()


def _in_app_context(method: F) -> F:
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if has_app_context():
            return method(self, *args, **kwargs)
        with _application().app_context():
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


class AppJob(Job):
    """A job whose ``handle`` and ``failed`` run in the Flask application's
    app context.

    The worker's job process imports the application once, the way
    ``flask conveyor queue work`` was told to (``--app`` or ``FLASK_APP``),
    or from ``app.py`` or ``wsgi.py`` in the current folder.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("handle", "failed"):
            method = cls.__dict__.get(name)
            if callable(method):
                setattr(cls, name, _in_app_context(method))

    @property
    def app(self) -> Flask:
        """The application, while ``handle`` runs."""
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        return app

"""The web dashboard: queue counts, jobs, failed jobs, workers and
migrations, as a Flask (WSGI) application.

Serve it with ``conveyor dashboard``, or mount it under a prefix of your own
WSGI application::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from conveyor.dashboard import create_app

    app.wsgi_app = DispatcherMiddleware(
        app.wsgi_app, {"/conveyor": create_app(settings, token=token)}
    )
"""

from __future__ import annotations

import os

from flask import Flask

from conveyor.config import Settings, load_settings
from conveyor.dashboard.security import ENV_TOKEN, csrf_token, guard, secret_key_for

__all__ = ["ENV_TOKEN", "create_app", "token_from_environment"]


def token_from_environment() -> str | None:
    """The dashboard token of ``CONVEYOR_DASHBOARD_TOKEN``, if set and not
    empty."""
    return os.environ.get(ENV_TOKEN) or None


def create_app(
    settings: Settings | None = None,
    *,
    token: str | None = None,
    refresh_seconds: float = 5.0,
    host_key: str | None = None,
) -> Flask:
    """The dashboard for ``settings`` (by default those the CLI reads).

    With ``token``, a browser must sign in with it; without, only clients on
    the loopback interface are answered. ``host_key``, the secret key of the
    application it is mounted in, lets every process of that application
    accept the same sessions when there is no token.
    """
    from conveyor.commands import open_migrator, open_store
    from conveyor.dashboard import views

    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key_for(token, host_key),
        # Its own cookie name: mounted inside another Flask application, the
        # two sessions must not overwrite each other.
        SESSION_COOKIE_NAME="conveyor_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        CONVEYOR_DASHBOARD_TOKEN=token,
        CONVEYOR_DASHBOARD_REFRESH=refresh_seconds,
    )
    app.extensions["conveyor_dashboard"] = views.Sources(
        settings=settings,
        store=open_store(settings),
        migrator=open_migrator(settings),
    )
    app.before_request(guard)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.filters.update(views.FILTERS)
    app.register_blueprint(views.blueprint)
    views.register_error_pages(app)
    return app

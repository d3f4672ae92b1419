"""Who may use the dashboard, and the CSRF check on every action.

Without a token the dashboard answers only clients on the loopback
interface. With one, a browser signs in once with it and its session cookie
says so afterwards. Every POST must carry the session's CSRF token, in the
``csrf_token`` form field or the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

from flask import abort, current_app, redirect, request, session, url_for
from werkzeug.wrappers import Response

#: The environment variable the dashboard's token is read from.
ENV_TOKEN = "CONVEYOR_DASHBOARD_TOKEN"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_OPEN_ENDPOINTS = {"dashboard.login", "static"}


def csrf_token() -> str:
    """The session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def secret_key_for(token: str | None, host_key: str | None = None) -> str:
    """The key that signs the session cookie: derived from the token, else
    from the key of the application the dashboard is mounted in, so that
    every process serving it accepts the same sessions; random per process
    when there is neither."""
    seed = token if token is not None else host_key
    if seed is None:
        return secrets.token_hex(32)
    return hashlib.sha256(b"conveyor-dashboard-session\0" + seed.encode()).hexdigest()


def token_matches(given: str) -> bool:
    token: str | None = current_app.config["CONVEYOR_DASHBOARD_TOKEN"]
    return token is not None and hmac.compare_digest(given.encode(), token.encode())


def guard() -> Response | None:
    """Run before every request: refuse what the rules above do not allow."""
    if request.method == "POST":
        sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, "")
        expected = session.get("csrf")
        if not isinstance(expected, str) or not hmac.compare_digest(
            sent.encode(), expected.encode()
        ):
            abort(400, "The form's CSRF token is missing or out of date; reload.")

    if request.endpoint == "static":
        return None
    if current_app.config["CONVEYOR_DASHBOARD_TOKEN"] is None:
        if not _is_loopback(request.remote_addr):
            abort(
                403,
                "This dashboard has no token, so it answers local clients only; "
                f"set {ENV_TOKEN} to open it to others.",
            )
        return None
    if request.endpoint in _OPEN_ENDPOINTS or session.get("signed_in"):
        return None
    if request.method == "POST":
        abort(403, "Sign in first.")
    return redirect(url_for("dashboard.login", next=request.full_path))


def _is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False

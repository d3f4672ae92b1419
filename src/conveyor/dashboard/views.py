"""The dashboard's pages (GET) and actions (POST, each redirecting back).

Every value from the database reaches the page through Jinja's escaping;
payloads and traces are shown as text, never as markup.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from conveyor.config import Settings
from conveyor.dashboard import queries
from conveyor.dashboard.security import token_matches
from conveyor.drivers.database import DatabaseStore
from conveyor.exceptions import ConveyorError, QueueError
from conveyor.failed.store import FailedJobStore
from conveyor.migrations.runner import Migrator
from conveyor.queue import inspection
from conveyor.worker.metrics import per_minute
from conveyor.worker.presence import request_restart

blueprint = Blueprint("dashboard", __name__)


@dataclass(frozen=True)
class Sources:
    """Where the dashboard reads from: made once per application."""

    settings: Settings
    store: DatabaseStore
    migrator: Migrator

    @property
    def failed(self) -> FailedJobStore:
        return FailedJobStore(self.store)


def _sources() -> Sources:
    sources: Sources = current_app.extensions["conveyor_dashboard"]
    return sources


# -- template filters ------------------------------------------------------------


def _seconds(value: int | None) -> str:
    """A span of seconds, as an operator reads it: 45 s, 3 min 20 s, 2 h 5 min."""
    if value is None:
        return ""
    value = max(int(value), 0)
    if value < 60:
        return f"{value} s"
    if value < 3600:
        return f"{value // 60} min {value % 60} s"
    if value < 86400:
        return f"{value // 3600} h {value % 3600 // 60} min"
    return f"{value // 86400} d {value % 86400 // 3600} h"


def _age(epoch: int | None) -> str:
    return "" if epoch is None else _seconds(int(time.time()) - epoch)


def _utc(epoch: int | None) -> str:
    if epoch is None:
        return ""
    moment = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


FILTERS: dict[str, Callable[..., str]] = {
    "seconds": _seconds,
    "age": _age,
    "utc": _utc,
    "first_line": _first_line,
    "readable": queries.readable,
}


# -- pages -------------------------------------------------------------------------


@blueprint.get("/")
def overview() -> str:
    sources = _sources()
    counts = inspection.queue_counts(sources.store)
    chart = per_minute(sources.store)
    totals = {
        kind: sum(getattr(c, kind) for c in counts)
        for kind in ("ready", "delayed", "running", "expired", "failed")
    }
    return render_template(
        "overview.html",
        page="overview",
        counts=counts,
        totals=totals,
        workers=inspection.workers(sources.store),
        chart=chart,
        chart_peak=max([max(m.done, m.failed) for m in chart] + [1]),
    )


@blueprint.get("/jobs")
def jobs() -> str:
    sources = _sources()
    state = request.args.get("state", "")
    states = (state,) if state in queries.JOB_STATES else queries.JOB_STATES
    queue = request.args.get("queue", "").strip()
    job = request.args.get("job", "").strip()
    result = queries.list_jobs(
        sources.store,
        states=states,
        queue=queue or None,
        job=job or None,
        page=request.args.get("page", 1, type=int) or 1,
    )
    return render_template(
        "jobs.html",
        page="jobs",
        result=result,
        filters={"state": state, "queue": queue, "job": job},
        queues=queries.queue_names(sources.store),
        states=queries.JOB_STATES,
    )


@blueprint.get("/jobs/<int:job_id>")
def job(job_id: int) -> str:
    row = queries.find_job(_sources().store, job_id)
    if row is None:
        abort(404, f"No job {job_id}: it ran, failed or was deleted.")
    return render_template("job.html", page="jobs", job=row)


@blueprint.get("/failed")
def failed() -> str:
    sources = _sources()
    queue = request.args.get("queue", "").strip()
    return render_template(
        "failed.html",
        page="failed",
        failed_jobs=sources.failed.all(queue or None),
        queue=queue,
        queues=queries.queue_names(sources.store),
    )


@blueprint.get("/failed/<int:failed_id>")
def failed_job(failed_id: int) -> str:
    try:
        record = _sources().failed.find(failed_id)
    except QueueError as exc:
        abort(404, str(exc))
    return render_template("failed_job.html", page="failed", job=record)


@blueprint.get("/workers")
def workers() -> str:
    return render_template(
        "workers.html", page="workers", workers=inspection.workers(_sources().store)
    )


@blueprint.get("/migrations")
def migrations() -> str:
    sources = _sources()
    return render_template(
        "migrations.html",
        page="migrations",
        status=sources.migrator.status(),
        folder=sources.migrator.folder,
    )


# -- actions -----------------------------------------------------------------------


def _back(default: str) -> Response:
    return redirect(url_for(default), code=303)


@blueprint.post("/failed/<int:failed_id>/retry")
def retry_one(failed_id: int) -> Response:
    try:
        [new_id] = _sources().failed.retry([failed_id])
    except QueueError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Failed job {failed_id} pushed again as job {new_id}.", "ok")
    return _back("dashboard.failed")


@blueprint.post("/failed/<int:failed_id>/forget")
def forget_one(failed_id: int) -> Response:
    try:
        _sources().failed.forget(failed_id)
    except QueueError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Failed job {failed_id} forgotten.", "ok")
    return _back("dashboard.failed")


@blueprint.post("/failed/retry")
def retry_many() -> Response:
    queue = request.form.get("queue", "").strip() or None
    new_ids = _sources().failed.retry(None, queue=queue)
    where = f" of queue {queue}" if queue else ""
    flash(f"{len(new_ids)} failed job(s){where} pushed again.", "ok")
    return _back("dashboard.failed")


@blueprint.post("/failed/flush")
def flush() -> Response:
    hours = request.form.get("hours", type=float)
    deleted = _sources().failed.flush(hours)
    older = f" older than {hours:g} h" if hours is not None else ""
    flash(f"{deleted} failed job(s){older} deleted.", "ok")
    return _back("dashboard.failed")


@blueprint.post("/workers/restart")
def restart() -> Response:
    asked = request_restart(_sources().store)
    flash(f"{asked} worker(s) asked to restart after their current job.", "ok")
    return _back("dashboard.workers")


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    target = request.values.get("next", "")
    # Only a path of this dashboard, never another site.
    if not target.startswith("/") or target.startswith("//"):
        target = url_for("dashboard.overview")
    if request.method == "POST":
        if token_matches(request.form.get("token", "")):
            session["signed_in"] = True
            return redirect(request.script_root + target, code=303)
        flash("That is not the dashboard's token.", "error")
    return render_template("login.html", page="login", next=target)


@blueprint.post("/logout")
def logout() -> Response:
    session.clear()
    return _back("dashboard.login")


# -- errors ------------------------------------------------------------------------


def register_error_pages(app: Flask) -> None:
    def http_error(exc: HTTPException) -> tuple[str, int]:
        return render_template(
            "error.html", page="error", title=exc.name, message=exc.description
        ), exc.code or 500

    def conveyor_error(exc: Exception) -> tuple[str, int]:
        message = _first_line(str(getattr(exc, "orig", None) or exc))
        return render_template(
            "error.html", page="error", title="Conveyor error", message=message
        ), 500

    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(ConveyorError, conveyor_error)
    app.register_error_handler(SQLAlchemyError, conveyor_error)

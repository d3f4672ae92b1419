"""The /queuetest demo: a small Flask application using Conveyor.

``python app.py`` (from any folder; ``scripts/webapp.sh`` runs it from a
scratch copy) migrates the SQLite database of this folder (or the one
``--database URL`` names), starts the Chinook example's SMTP mailbox and one
worker, and serves http://127.0.0.1:5000/queuetest, with the dashboard at
/conveyor/.

``flask --app app run`` serves the page alone; ``flask --app app conveyor
queue work`` runs a worker whose jobs see the application's config.
"""

from __future__ import annotations

import argparse
import hmac
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from flask import Flask, abort, flash, redirect, render_template, request, session

from conveyor.commands import open_migrator
from conveyor.integrations.flask import Conveyor
from conveyor.queue import inspection

HERE = Path(__file__).resolve().parent
MAILBOX_FILE = HERE.parent / "chinook" / "mailbox.py"

conveyor = Conveyor()

#: What each button pushes: (label, job, data, queue, delay in seconds).
BUTTONS = {
    "welcome": ("Push a welcome email", "SendWelcomeEmail", None, None, 0),
    "delayed": ("Push a reminder in 60 s", "SendReminder", None, None, 60),
    "high": ("Push a card charge on high", "ChargeCard", None, "high", 0),
    "failing": ("Push a job that fails", "AlwaysFails", None, None, 0),
}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_hex(16),
        MAIL_HOST=os.environ.get("CHINOOK_SMTP_HOST", "127.0.0.1"),
        MAIL_PORT=int(os.environ.get("CHINOOK_SMTP_PORT", "8025")),
        MAILS_FILE=str(HERE / "mails.jsonl"),
        CONVEYOR_DASHBOARD_PREFIX="/conveyor",
    )
    app.config.update(config or {})
    conveyor.init_app(app)

    @app.get("/")
    def index() -> Any:
        return redirect("/queuetest")

    @app.get("/queuetest")
    def queuetest() -> str:
        store = conveyor.queue.store
        return render_template(
            "queuetest.html",
            buttons=BUTTONS,
            counts=inspection.queue_counts(store),
            workers=inspection.workers(store),
            migrations=open_migrator(conveyor.settings).status(),
            mails=_mail_count(Path(app.config["MAILS_FILE"])),
            csrf=_csrf_token(),
        )

    @app.post("/queuetest/<kind>")
    def push(kind: str) -> Any:
        sent, expected = request.form.get("csrf", ""), session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent, expected):
            abort(400, "CSRF token missing or wrong")
        if kind not in BUTTONS:
            abort(404)
        _label, job, _data, queue, delay = BUTTONS[kind]
        data = _data_for(kind)
        job_id = conveyor.queue.later(delay, job, data, queue=queue)
        on = queue or conveyor.settings.queue.default
        flash(
            f"Pushed {job} as job {job_id} on queue {on}"
            + (f", due in {delay} s." if delay else ".")
        )
        return redirect("/queuetest", code=303)

    return app


def _data_for(kind: str) -> dict[str, Any]:
    number = secrets.randbelow(9000) + 1000
    if kind in ("welcome", "delayed"):
        return {"to": f"user{number}@example.com"}
    return {"order": number}


def _csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    token: str = session["csrf"]
    return token


def _mail_count(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line)


def _load_mailbox() -> ModuleType:
    # Loaded by path: the file is named like the standard library's mailbox.
    spec = importlib.util.spec_from_file_location("chinook_mailbox", MAILBOX_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description="The /queuetest demo.")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--smtp-port", type=int, default=8025)
    parser.add_argument("--database", metavar="URL", help="instead of conveyor.db")
    args = parser.parse_args()
    os.chdir(HERE)
    if args.database:
        os.environ["CONVEYOR_DATABASE_URL"] = args.database
    # Stopped by a process manager: shut the worker and the mailbox too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.environ["CHINOOK_SMTP_PORT"] = str(args.smtp_port)

    app = create_app()
    with app.app_context():
        steps = open_migrator(conveyor.settings).migrate()
    print(f"migrated: {len(steps)} migration(s) ran", flush=True)
    mailbox = _load_mailbox().start_mailbox(HERE / "mails.jsonl", port=args.smtp_port)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "app",
            "conveyor",
            "queue",
            "work",
            "--queue",
            "high,default",
        ],
        cwd=HERE,
    )
    print(f"open http://127.0.0.1:{args.port}/queuetest (^C stops)", flush=True)
    try:
        app.run(host="127.0.0.1", port=args.port)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        mailbox.stop()


if __name__ == "__main__":
    main()

"""The dashboard's pages and actions through Flask's test client, on every
database: counts, filters, pages, the payload and trace shown as text, and
every action refused without its CSRF token."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from conveyor.commands import open_store
from conveyor.config import load_settings
from conveyor.dashboard import create_app
from conveyor.dashboard.queries import list_jobs
from conveyor.failed.store import FailedJobStore
from conveyor.worker.metrics import per_minute
from conveyor.worker.presence import Presence
from helpers import (
    EVERY_STATE,
    HOSTILE,
    count,
    fill_every_state,
    push,
    run_cli,
    run_process,
    work,
    write_jobs,
    write_table_migrations,
)


@pytest.fixture
def dashboard(tmp_path: Path, database_url: str) -> Iterator[Flask]:
    settings = load_settings(database_url=database_url, cwd=tmp_path)
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["conveyor_dashboard"].store.engine.dispose()
    app.extensions["conveyor_dashboard"].migrator.engine.dispose()


@pytest.fixture
def client(dashboard: Flask) -> FlaskClient:
    return dashboard.test_client()


def csrf_of(client: FlaskClient, path: str = "/failed") -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def queue_row(page: str, queue: str) -> dict[str, str]:
    row = re.search(rf'<tr data-queue="{queue}">(.*?)</tr>', page, re.S)
    assert row, page
    cells = re.findall(r'data-count="(\w+)">(?:<a [^>]*>)?([^<]*)', row.group(1))
    return dict(cells)


def failed_ids(url: str, queue: str | None = None) -> list[int]:
    store = open_store(load_settings(database_url=url))
    try:
        return [job.id for job in FailedJobStore(store).all(queue)]
    finally:
        store.engine.dispose()


def test_overview_counts_every_state_per_queue(
    client: FlaskClient, database_url: str
) -> None:
    fill_every_state(database_url)

    page = client.get("/").get_data(as_text=True)

    for queue, (ready, delayed, running, failed) in EVERY_STATE.items():
        row = queue_row(page, queue)
        assert (row["ready"], row["delayed"], row["running"], row["failed"]) == (
            str(ready),
            str(delayed),
            str(running),
            str(failed),
        )
        assert row["oldest"].endswith(" s")
    assert 'data-total="ready">5<' in page
    assert 'data-total="failed">3<' in page
    minutes = re.findall(r'data-done="(\d+)" data-failed="(\d+)"', page)
    assert len(minutes) == 60
    assert minutes[-1] == ("5", "2") or minutes[-2] == ("5", "2")


def test_jobs_filter_by_state_queue_and_job_name(
    client: FlaskClient, database_url: str
) -> None:
    ids = fill_every_state(database_url)

    def listed(query: str) -> list[int]:
        page = client.get(f"/jobs?{query}").get_data(as_text=True)
        return [int(i) for i in re.findall(r'data-job-id="(\d+)"', page)]

    assert listed("") == sorted(ids["running"] + ids["ready"] + ids["delayed"])
    assert listed("queue=mail") == sorted(ids["running"] + ids["ready"][3:])
    assert listed("job=SendWelcomeEmail&state=ready") == ids["ready"][3:]
    assert listed("state=delayed") == ids["delayed"]
    assert listed("state=running") == ids["running"]
    assert listed("job=Send_elcomeEmail") == []
    assert listed("job=Nothing%25") == []


def test_jobs_are_paginated(client: FlaskClient, database_url: str) -> None:
    ids = push(database_url, "Record", *[{"n": n} for n in range(120)])

    first = client.get("/jobs").get_data(as_text=True)
    last = client.get("/jobs?page=3").get_data(as_text=True)

    assert "120 job(s), page 1 of 3." in first
    assert re.findall(r'data-job-id="(\d+)"', first) == [str(i) for i in ids[:50]]
    assert re.findall(r'data-job-id="(\d+)"', last) == [str(i) for i in ids[100:]]
    assert 'href="/jobs?page=2' in last

    store = open_store(load_settings(database_url=database_url))
    page = list_jobs(store, page=2, page_size=30, job="Record")
    store.engine.dispose()
    assert (page.total, page.pages, [r.id for r in page.rows]) == (120, 4, ids[30:60])


def test_payloads_and_traces_are_shown_as_text_never_as_html(
    client: FlaskClient, database_url: str
) -> None:
    ids = fill_every_state(database_url)
    [hostile] = failed_ids(database_url, "mail")
    escaped = "&lt;script&gt;window.pwned = 1&lt;/script&gt;"

    pages = [
        client.get("/failed").get_data(as_text=True),
        client.get(f"/failed/{hostile}").get_data(as_text=True),
    ]
    push(database_url, "Record", {"html": HOSTILE})
    listed = client.get("/jobs?job=Record").get_data(as_text=True)
    newest = re.findall(r'data-job-id="(\d+)"', listed)[-1]
    pages.append(client.get(f"/jobs/{newest}").get_data(as_text=True))

    for page in pages:
        assert "<script>window" not in page and "<img src=x" not in page
        assert escaped in page
    assert "Traceback (most recent call last)" in pages[1]
    assert client.get(f"/jobs/{ids['ready'][0]}").status_code == 200
    assert client.get("/jobs/999999").status_code == 404
    assert client.get("/failed/999999").status_code == 404


def test_every_action_without_its_csrf_token_is_refused(
    client: FlaskClient, database_url: str
) -> None:
    fill_every_state(database_url)
    first = failed_ids(database_url)[0]
    client.get("/failed")

    for path in [
        f"/failed/{first}/retry",
        f"/failed/{first}/forget",
        "/failed/retry",
        "/failed/flush",
        "/workers/restart",
    ]:
        refused = client.post(path, data={})
        assert refused.status_code == 400, path
        wrong = client.post(path, data={"csrf_token": "guess"})
        assert wrong.status_code == 400, path

    assert len(failed_ids(database_url)) == 3


def test_retry_forget_retry_a_queue_and_flush(
    client: FlaskClient, database_url: str, engine: sa.Engine
) -> None:
    fill_every_state(database_url)
    first, second, on_mail = failed_ids(database_url)
    token = csrf_of(client)
    jobs_before = count(engine, "jobs")

    retried = client.post(f"/failed/{first}/retry", data={"csrf_token": token})
    assert retried.status_code == 303
    assert failed_ids(database_url) == [second, on_mail]
    assert count(engine, "jobs") == jobs_before + 1
    assert "pushed again as job" in client.get("/failed").get_data(as_text=True)

    client.post(f"/failed/{second}/forget", data={"csrf_token": token})
    assert failed_ids(database_url) == [on_mail]
    assert count(engine, "jobs") == jobs_before + 1

    client.post("/failed/retry", data={"csrf_token": token, "queue": "default"})
    assert failed_ids(database_url) == [on_mail]
    client.post("/failed/retry", data={"csrf_token": token, "queue": "mail"})
    assert failed_ids(database_url) == []
    assert count(engine, "jobs") == jobs_before + 2

    fill_every_state(database_url)
    client.post("/failed/flush", data={"csrf_token": token, "hours": "1"})
    assert len(failed_ids(database_url)) == 3
    client.post("/failed/flush", data={"csrf_token": token})
    assert failed_ids(database_url) == []


def test_every_confirmable_action_asks_first(
    client: FlaskClient, database_url: str
) -> None:
    fill_every_state(database_url)
    first = failed_ids(database_url)[0]
    pages = [
        client.get(path).get_data(as_text=True)
        for path in ("/failed", f"/failed/{first}", "/workers")
    ]
    post = r'<form method="post"[^>]*>'
    forms = [form for page in pages for form in re.findall(post, page)]
    assert len(forms) >= 8
    assert all("data-confirm=" in form for form in forms)


def test_workers_page_and_restart(client: FlaskClient, database_url: str) -> None:
    store = open_store(load_settings(database_url=database_url))
    store.ensure_tables()
    presence = Presence(store, ["high", "default"])
    presence.register()

    page = client.get("/workers").get_data(as_text=True)
    assert f'data-worker-id="{presence.id}"' in page and "high,default" in page

    token = csrf_of(client, "/workers")
    client.post("/workers/restart", data={"csrf_token": token})
    assert presence.beat(None, every=0) is True
    assert "restarting" in client.get("/workers").get_data(as_text=True)
    store.engine.dispose()


def test_migrations_page_shows_the_status_read_only(
    tmp_path: Path, client: FlaskClient, database_url: str
) -> None:
    write_table_migrations(tmp_path, ["alpha", "beta"])
    applied = run_cli(["migrate", "--step"], cwd=tmp_path, database_url=database_url)
    assert applied.exit_code == 0, applied.output
    write_table_migrations(tmp_path, ["gamma"], start=2)

    page = client.get("/migrations").get_data(as_text=True)

    assert "3 migration(s), 1 pending." in page
    assert page.count('class="badge m-ran"') == 2
    assert page.count('class="badge m-pending"') == 1
    assert client.post("/migrations").status_code in (400, 405)


def test_other_clients_are_refused_without_a_token(
    tmp_path: Path, database_url: str
) -> None:
    settings = load_settings(database_url=database_url, cwd=tmp_path)
    open_app = create_app(settings)
    remote = {"REMOTE_ADDR": "192.0.2.7"}

    assert open_app.test_client().get("/").status_code == 200
    assert open_app.test_client().get("/", environ_base=remote).status_code == 403

    guarded = create_app(settings, token="s3cret")
    client = guarded.test_client()
    assert client.get("/", environ_base=remote).status_code == 302
    token = csrf_of(client, "/login")
    wrong = client.post(
        "/login", data={"csrf_token": token, "token": "nope"}, environ_base=remote
    )
    assert "not the dashboard&#39;s token" in wrong.get_data(as_text=True)
    signed_in = client.post(
        "/login",
        data={"csrf_token": token, "token": "s3cret", "next": "/failed"},
        environ_base=remote,
    )
    assert signed_in.status_code == 303 and signed_in.location.endswith("/failed")
    assert client.get("/failed", environ_base=remote).status_code == 200
    for app in (open_app, guarded):
        app.extensions["conveyor_dashboard"].store.engine.dispose()


def test_the_command_refuses_another_bind_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVEYOR_DASHBOARD_TOKEN", raising=False)

    result = run_cli(["dashboard", "--host", "0.0.0.0", "--port", "0"], cwd=tmp_path)

    assert result.exit_code == 1
    assert "CONVEYOR_DASHBOARD_TOKEN" in result.stderr


@pytest.mark.databases("sqlite")
def test_importing_conveyor_and_its_commands_never_imports_flask(
    tmp_path: Path, database_url: str
) -> None:
    probe = (
        "import sys, conveyor\n"
        "from conveyor.cli import main\n"
        "for args in (['migrate', 'status'], ['queue', 'status']):\n"
        "    try:\n"
        "        main(args + ['--database', sys.argv[1]])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('flask' in sys.modules)\n"
    )
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", probe, database_url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr
    listed = run_process(["--help"], cwd=tmp_path)
    assert "dashboard" in listed.stdout


def test_workers_count_jobs_done_and_failed_per_minute(
    tmp_path: Path, database_url: str
) -> None:
    write_jobs(tmp_path, "standard")
    push(database_url, "Record", {"n": 1}, {"n": 2})
    push(database_url, "Boom", {"n": 3})

    result = work(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    store = open_store(load_settings(database_url=database_url))
    minutes = per_minute(store)
    store.engine.dispose()
    assert len(minutes) == 60
    assert (sum(m.done for m in minutes), sum(m.failed for m in minutes)) == (2, 1)

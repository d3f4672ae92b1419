"""The dashboard and the /queuetest demo in a real browser: Debian's Chromium
driven by Playwright, against a real ``conveyor dashboard`` process, real
workers and every database.

Without Chromium (or Playwright) these tests skip on a developer's machine
and fail under ``CI=true``. Each page is saved as a screenshot in
``tests/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import IN_CI
from conveyor import Queue
from conveyor.worker.metrics import metrics_table
from conveyor.worker.presence import Presence
from helpers import (
    EVERY_STATE,
    fill_every_state,
    run_cli,
    runs,
    start_worker,
    table,
    wait_until,
    write_table_migrations,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("CONVEYOR_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Milliseconds a page may take to show what it should, on a busy machine.
PATIENCE = 30_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "Playwright is not installed (pip install playwright)"
    if problem is None and not CHROMIUM.exists():
        problem = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true and the browser tests cannot run: {problem}")
        pytest.skip(problem)

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture
def answers() -> list[bool]:
    """The answers the next confirmations get, in turn; then yes, as an
    operator who means it would answer."""
    return []


@pytest.fixture
def page(browser: Any, answers: list[bool]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    context.set_default_timeout(PATIENCE)
    page = context.new_page()

    def answer(dialog: Any) -> None:
        if answers.pop(0) if answers else True:
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", answer)
    yield page
    context.close()


def shoot(page: Any, name: str, database_name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}-{database_name}.png"
    page.screenshot(path=str(path), full_page=True)


def serve(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **env},
    )


def address_of(server: subprocess.Popen[str], pattern: str) -> str:
    """The URL a server prints once it listens."""
    assert server.stdout is not None
    seen = []
    for line in server.stdout:
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found.group(1)
    raise AssertionError("the server stopped before it listened:\n" + "".join(seen))


def stop(server: subprocess.Popen[str]) -> None:
    """SIGTERM to the group, then SIGKILL after a while."""
    for signum, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, signum)
        except ProcessLookupError:
            break
        try:
            server.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def dashboard(app: Path, database_url: str) -> Iterator[str]:
    """A ``conveyor dashboard`` process on a free port, refreshing its pages
    every second; its base URL."""
    server = serve(
        [sys.executable, "-u", "-m", "conveyor", "dashboard", "--port", "0"]
        + ["--refresh", "1", "--database", database_url],
        app,
        {"CONVEYOR_DASHBOARD_TOKEN": ""},
    )
    try:
        yield address_of(server, r"dashboard on (http://\S+/)").rstrip("/")
    finally:
        stop(server)


def chart_history(url: str) -> None:
    """Counts for every minute of the last hour, as busy workers would have
    left them, so the chart has something to show."""
    queue = Queue(url)
    store = queue.store
    metrics = metrics_table(store.tables.jobs.name)
    now = store.now() // 60 * 60
    rows = [
        {
            "minute": now - 60 * ago,
            "queue": "default",
            "done": 20 + (ago * 7) % 23,
            "failed": (ago * 5) % 7 // 2,
        }
        for ago in range(1, 60)
    ]
    with store.engine.begin() as connection:
        connection.execute(sa.insert(metrics), rows)
    queue.close()


def failed_record(url: str, queue_name: str, data: Any) -> None:
    """A ``Record`` job in the failed-job store, as if it had failed once."""
    queue = Queue(url)
    queue.push("Record", data, queue=queue_name)
    job = queue.store.reserve(queue_name)
    assert job is not None
    queue.store.fail(job, "Traceback (most recent call last):\nOSError: down", "")
    queue.close()


def test_every_page_shows_the_jobs_in_every_state(
    page: Any,
    dashboard: str,
    app: Path,
    database_url: str,
    database_name: str,
) -> None:
    write_table_migrations(app, ["customers", "invoices"])
    assert run_cli(["migrate"], cwd=app, database_url=database_url).exit_code == 0
    write_table_migrations(app, ["refunds"], start=2)
    fill_every_state(database_url)
    chart_history(database_url)
    queue = Queue(database_url)
    Presence(queue.store, ["high", "default"]).register()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(dashboard + "/")
    for name, expected in EVERY_STATE.items():
        row = page.locator(f'tr[data-queue="{name}"]')
        kinds = ("ready", "delayed", "running", "failed")
        shown = [row.locator(f'[data-count="{kind}"]').inner_text() for kind in kinds]
        assert shown == [str(n) for n in expected]
    assert page.locator('[data-total="workers"]').inner_text() == "1"
    assert page.locator("#chart g[data-minute]").count() == 60
    shoot(page, "overview", database_name)

    # The page refreshes itself, in place: a marker set on it survives.
    page.evaluate("window.stillThere = true")
    queue.push("Record", {"n": "new"}, queue="fresh")
    page.locator('tr[data-queue="fresh"] [data-count="ready"]').wait_for()
    assert page.evaluate("window.stillThere") is True

    page.goto(dashboard + "/jobs?queue=mail")
    assert page.locator("tr[data-job-id]").count() == 3
    shoot(page, "jobs", database_name)
    page.locator("tr[data-job-id] a").first.click()
    page.locator("pre.payload").wait_for()
    shoot(page, "job", database_name)

    page.goto(dashboard + "/failed")
    assert page.locator("tr[data-failed-id]").count() == 3
    shoot(page, "failed", database_name)
    page.locator("tr[data-failed-id] a").last.click()
    trace = page.locator("pre.trace").inner_text()
    assert "<script>window.pwned = 1</script>" in trace
    assert page.evaluate("window.pwned") is None
    shoot(page, "failed-job", database_name)

    page.goto(dashboard + "/workers")
    assert page.locator("tr[data-worker-id]").count() == 1
    shoot(page, "workers", database_name)

    page.goto(dashboard + "/migrations")
    states = page.locator("tr[data-migration] .badge").all_inner_texts()
    assert states == ["ran", "ran", "pending"]
    shoot(page, "migrations", database_name)

    assert requested and all(url.startswith(dashboard) for url in requested)
    queue.close()


def test_a_failed_job_retried_with_the_button_leaves_the_list_and_runs(
    page: Any,
    dashboard: str,
    app: Path,
    database_url: str,
    database_name: str,
) -> None:
    failed_record(database_url, "retryable", {"n": "again"})
    failed_record(database_url, "other", {"n": "stays"})
    worker = start_worker(
        app, database_url, ("--queue", "retryable", "--sleep", "0.5"), app / "w.log"
    )
    try:
        page.goto(dashboard + "/failed")
        rows = page.locator("tr[data-failed-id]")
        assert rows.count() == 2
        rows.filter(has_text="retryable").get_by_role("button", name="Retry").click()

        page.locator(".flash.ok").filter(has_text="pushed again").wait_for()
        rows.filter(has_text="retryable").wait_for(state="detached")
        assert rows.count() == 1
        shoot(page, "failed-after-retry", database_name)
        ran = wait_until(
            lambda: [r for r in runs(app, "run") if r["data"] == {"n": "again"}],
            60,
            "the retried job ran",
        )
        assert len(ran) == 1
    finally:
        worker.kill()


def test_an_action_waits_for_its_confirmation(
    page: Any, answers: list[bool], dashboard: str, database_url: str
) -> None:
    failed_record(database_url, "default", {"n": 1})
    page.goto(dashboard + "/failed")
    forget = page.locator("tr[data-failed-id]").get_by_role("button", name="Forget")

    answers.append(False)
    forget.click()
    page.wait_for_timeout(1500)
    assert page.locator("tr[data-failed-id]").count() == 1

    forget.click()
    page.locator(".flash.ok").filter(has_text="forgotten").wait_for()
    assert page.locator("tr[data-failed-id]").count() == 0


def test_a_post_without_the_csrf_token_is_refused(
    page: Any, dashboard: str, database_url: str
) -> None:
    failed_record(database_url, "default", {"n": 1})
    page.goto(dashboard + "/failed")
    failed_id = page.locator("tr[data-failed-id]").get_attribute("data-failed-id")

    statuses = page.evaluate(
        """async (id) => {
            const bare = await fetch(`failed/${id}/retry`, {method: "POST"});
            const forged = await fetch(`failed/${id}/retry`, {
                method: "POST",
                body: new URLSearchParams({csrf_token: "forged"}),
            });
            const flush = await fetch("failed/flush", {method: "POST"});
            return [bare.status, forged.status, flush.status];
        }""",
        failed_id,
    )

    assert statuses == [400, 400, 400]
    page.reload()
    assert page.locator("tr[data-failed-id]").count() == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def demo(tmp_path: Path, database_url: str) -> Iterator[tuple[str, Path]]:
    """The /queuetest application with its worker and mailbox, as
    ``scripts/webapp.sh`` runs it, from a copy; its URL and folder."""
    folder = tmp_path / "demo"
    shutil.copytree(EXAMPLES / "webapp", folder / "webapp")
    (folder / "chinook").mkdir()
    shutil.copy(EXAMPLES / "chinook" / "mailbox.py", folder / "chinook")
    webapp = folder / "webapp"
    server = serve(
        [sys.executable, "-u", "app.py", "--port", str(free_port())]
        + ["--smtp-port", str(free_port()), "--database", database_url],
        webapp,
        {},
    )
    try:
        yield address_of(server, r"open (http://\S+)/queuetest"), webapp
    finally:
        stop(server)


def test_the_demo_buttons_push_what_they_say(
    page: Any,
    demo: tuple[str, Path],
    engine: sa.Engine,
    database_name: str,
) -> None:
    url, webapp = demo
    page.goto(url + "/queuetest")
    assert "ran" in page.locator("#migrations").inner_text()

    pushed = {}
    for kind, job, on in [
        ("welcome", "SendWelcomeEmail", "default"),
        ("delayed", "SendReminder", "default"),
        ("high", "ChargeCard", "high"),
        ("failing", "AlwaysFails", "default"),
    ]:
        page.locator(f'button[data-kind="{kind}"]').click()
        flash = page.locator(".flash").last.inner_text()
        found = re.search(rf"Pushed {job} as job (\d+) on queue {on}\b", flash)
        assert found, flash
        pushed[kind] = int(found.group(1))

    mails = webapp / "mails.jsonl"
    wait_until(
        lambda: mails.exists() and "Welcome!" in mails.read_text(), 60, "the mail"
    )
    jobs = table(engine, "jobs")
    [reminder] = [row for row in jobs if row["id"] == pushed["delayed"]]
    assert reminder["available_at"] - reminder["created_at"] >= 59
    failed = wait_until(lambda: table(engine, "failed_jobs"), 60, "the failing job")
    assert "RuntimeError: this job always fails" in failed[0]["exception"]
    assert failed[0]["queue"] == "default"

    def done_on_high() -> int:
        # The worker writes its counts every few seconds, creating the table
        # the first time.
        try:
            metrics = sa.Table("jobs_metrics", sa.MetaData(), autoload_with=engine)
        except sa.exc.NoSuchTableError:
            return 0
        with engine.connect() as connection:
            done = connection.execute(
                sa.select(sa.func.sum(metrics.c.done)).where(metrics.c.queue == "high")
            ).scalar()
        return int(done or 0)

    assert wait_until(done_on_high, 60, "the job on high counted done") == 1
    page.reload()
    shoot(page, "queuetest", database_name)

"""The Chinook mail story (examples/chinook) on every database: one
SendInvoiceEmail job per invoice, two worker processes sending them to a
real SMTP server, a few retried after a busy reply, one refused for good
until it is fixed and retried from failed_jobs; every invoice is mailed
exactly once in the end."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor.commands import open_store
from conveyor.config import load_settings
from conveyor.db import create_engine, family_of
from conveyor.failed.store import FailedJobStore
from helpers import run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chinook"
INVOICES = 412
WORKER = [
    "queue",
    "work",
    "--queue=default",
    "--tries=3",
    "--backoff=0",
    "--sleep=0",
    "--stop-when-empty",
]
#: Seconds all the workers of one run may take together; they need a few.
WORKERS_TIMEOUT = 120.0

ReadMails = Callable[[], list[dict[str, Any]]]


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up while it runs.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A copy of the example, so nothing it writes lands in the repository."""
    copy = tmp_path / "chinook"
    shutil.copytree(
        EXAMPLE,
        copy,
        ignore=shutil.ignore_patterns(
            "__pycache__", "*.db*", "*.jsonl", "fixed_invoices.txt"
        ),
    )
    return copy


@pytest.fixture
def mailbox(app: Path, tmp_path: Path) -> Iterator[tuple[int, ReadMails]]:
    """The example's SMTP server, in this process: its port, and a function
    returning the mails it has received."""
    module = load_module(app / "mailbox.py", "chinook_mailbox")
    out = tmp_path / "mails.jsonl"
    port = free_port()
    controller = module.start_mailbox(out, port=port)
    try:
        yield port, lambda: module.read_mails(out)
    finally:
        controller.stop()


def run_workers(
    app: Path, database_url: str, smtp_port: int, count: int, logs: Path
) -> str:
    """Start ``count`` workers at once and wait for all of them; their output."""
    env = {**os.environ, "CHINOOK_SMTP_PORT": str(smtp_port)}
    env.pop("CONVEYOR_DATABASE_URL", None)
    logs.mkdir(exist_ok=True)
    started = len(list(logs.iterdir()))
    paths = [logs / f"worker-{started + n}.log" for n in range(count)]
    processes = []
    for path in paths:
        with path.open("w") as log:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "conveyor",
                        *WORKER,
                        "--database",
                        database_url,
                    ],
                    cwd=app,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    deadline = time.monotonic() + WORKERS_TIMEOUT
    try:
        for process in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        output = "\n".join(path.read_text() for path in paths)
        pytest.fail(f"workers still running after {WORKERS_TIMEOUT:g} s:\n{output}")
    output = "\n".join(path.read_text() for path in paths)
    assert [process.returncode for process in processes] == [0] * count, output
    return output


def recipients(database_url: str, chinook_name: Any) -> dict[int, tuple[int, str]]:
    """Each invoice's customer id and e-mail address, read straight from the
    database."""
    engine = create_engine(database_url)
    try:
        dialect = family_of(engine)

        def column(name: str) -> sa.ColumnClause[Any]:
            return sa.column(chinook_name(name, dialect))

        invoice = sa.table(
            chinook_name("Invoice", dialect), column("InvoiceId"), column("CustomerId")
        )
        customer = sa.table(
            chinook_name("Customer", dialect), column("CustomerId"), column("Email")
        )
        customer_id = chinook_name("CustomerId", dialect)
        query = sa.select(
            invoice.c[chinook_name("InvoiceId", dialect)],
            customer.c[customer_id],
            customer.c[chinook_name("Email", dialect)],
        ).select_from(
            invoice.join(customer, invoice.c[customer_id] == customer.c[customer_id])
        )
        with engine.connect() as connection:
            return {row[0]: (row[1], row[2]) for row in connection.execute(query)}
    finally:
        engine.dispose()


def queue_status(app: Path, database_url: str) -> list[dict[str, Any]]:
    result = run_cli(["queue", "status", "--json"], cwd=app, database_url=database_url)
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout)["queues"])


def failed_jobs(app: Path, database_url: str) -> list[tuple[Any, str]]:
    """The data and error of each job in failed_jobs."""
    store = open_store(load_settings(database_url=database_url, cwd=app))
    try:
        return [
            (json.loads(job.payload)["data"], job.exception)
            for job in FailedJobStore(store).all()
        ]
    finally:
        store.engine.dispose()


@pytest.mark.slow
def test_every_invoice_is_mailed_exactly_once(
    app: Path,
    mailbox: tuple[int, ReadMails],
    database_url: str,
    tmp_path: Path,
) -> None:
    smtp_port, read_mails = mailbox
    job = load_module(app / "jobs" / "send_invoice_email.py", "chinook_send_job")
    busy_customers, refused = job.DEMO_BUSY_CUSTOMERS, job.DEMO_REFUSED_INVOICE
    logs = tmp_path / "logs"

    result = run_cli(["migrate"], cwd=app, database_url=database_url)
    assert result.exit_code == 0, result.output
    pushed = subprocess.run(
        [sys.executable, "push_invoices.py", "--database", database_url],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert f"pushed {INVOICES} SendInvoiceEmail jobs" in pushed.stdout

    customers = recipients(database_url, job.chinook_name)
    assert len(customers) == INVOICES
    busy = {i for i, (customer, _) in customers.items() if customer in busy_customers}
    # The story needs both kinds, and the refused invoice must not also be
    # one of the busy ones, or its first failure would be the 421.
    assert busy and refused in customers and refused not in busy

    # Two workers at once: the first run.
    output = run_workers(app, database_url, smtp_port, 2, logs)
    mails = read_mails()
    sent = Counter(mail["invoice_id"] for mail in mails)
    assert sent == Counter(set(customers) - {refused}), "each mailed exactly once"
    for mail in mails:
        invoice = mail["invoice_id"]
        assert mail["rcpt_tos"] == [customers[invoice][1]], mail
        assert mail["attempt"] == (2 if invoice in busy else 1), mail
        assert mail["subject"].startswith(f"Your Chinook invoice #{invoice} of ")
    # The busy ones were retried after a 421; the refused one was not retried
    # after its 554 but failed at once, and its failed() hook ran.
    retried = [line for line in output.splitlines() if " RETRY " in line]
    failed = [line for line in output.splitlines() if " FAILED " in line]
    assert len(retried) == len(busy), output
    assert all("attempt=1" in line and "421 4.3.2" in line for line in retried)
    assert len(failed) == 1, output
    assert "attempt=1" in failed[0] and "554 5.7.1" in failed[0]
    assert f"gave up on invoice {refused}: invoice {refused}: SMTP 554" in output

    [(data, error)] = failed_jobs(app, database_url)
    assert data == {"invoice_id": refused}
    assert "554 5.7.1" in error
    [default] = queue_status(app, database_url)
    assert (default["queue"], default["failed"]) == ("default", 1)
    assert default["ready"] == default["delayed"] == default["running"] == 0

    # The fix, then the failed job goes back onto the queue.
    (app / "fixed_invoices.txt").write_text(f"{refused}\n", encoding="utf-8")
    result = run_cli(["queue", "retry", "all"], cwd=app, database_url=database_url)
    assert result.exit_code == 0, result.output
    assert "pushed 1 failed job(s)" in result.stdout
    run_workers(app, database_url, smtp_port, 1, logs)

    mails = read_mails()
    assert Counter(mail["invoice_id"] for mail in mails) == Counter(list(customers))
    [late] = [mail for mail in mails if mail["invoice_id"] == refused]
    # queue retry starts the count of attempts afresh.
    assert late["attempt"] == 1
    assert late["rcpt_tos"] == [customers[refused][1]]
    assert len({mail["message_id"] for mail in mails}) == INVOICES
    assert failed_jobs(app, database_url) == []
    assert queue_status(app, database_url) == []

    # A mail as the customer reads it: customer 49's address is not ASCII.
    [first] = [mail for mail in mails if mail["invoice_id"] == 1]
    assert "Dear Leonie Köhler," in first["body"]
    assert "Balls to the Wall" in first["body"]
    assert "1.98" in first["body"]
    assert any(mail["rcpt_tos"] == ["stanisław.wójcik@wp.pl"] for mail in mails)

"""``conveyor queue work`` on every database, run in-process the way a user
runs it, with job classes written into the application's ``jobs/`` folder;
and the tooling around failed jobs: failed, show, retry, forget, flush,
clear, status and workers. The failure cases (Q01 to Q10) are in
``tests/cases``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import sqlalchemy as sa

from conveyor import Queue
from helpers import (
    failed_by_job,
    make_due,
    queue_cli,
    recorded,
    rows,
    run_cli,
    steps,
    work,
    write_jobs,
)


def insert_job(engine: sa.Engine, payload: str) -> None:
    """A jobs row on ``default`` written directly, due now, with any payload
    text at all."""
    now = int(time.time())
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO jobs (queue, payload, attempts, available_at, "
                "created_at) VALUES ('default', :payload, 0, :now, :now)"
            ),
            {"payload": payload, "now": now},
        )


# -- running jobs --------------------------------------------------------------


def test_done_job_is_deleted_and_logged_as_one_json_line(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """A job that returns is deleted; it saw its id, queue and attempt 1 in
    its context; ``--log-format json`` logs one JSON object per event; the
    worker leaves no row behind in the workers table."""
    write_jobs(tmp_path, "app")
    job_id = queue.push("Record", {"x": 1})

    result = work(tmp_path, database_url, "--log-format", "json")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "job", "id", "queue", "attempt", "data") == [
        ("Record", job_id, "default", 1, {"x": 1})
    ]
    assert rows(engine, "jobs") == []
    assert rows(engine, "failed_jobs") == []
    assert rows(engine, "job_workers") == []
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    done = [entry for entry in logged if entry.get("event") == "job_done"]
    assert len(done) == 1
    assert done[0]["job"] == "Record"
    assert done[0]["job_id"] == job_id
    assert done[0]["queue"] == "default"
    assert done[0]["attempt"] == 1
    assert done[0]["status"] == "DONE"
    assert [entry["event"] for entry in logged][0] == "worker_started"
    assert [entry["event"] for entry in logged][-1] == "worker_stopped"


def test_queues_are_served_in_the_order_given(
    tmp_path: Path, database_url: str, queue: Queue
) -> None:
    """``--queue=high,default`` drains ``high`` before taking any ``default``
    job, whatever order they were pushed in."""
    write_jobs(tmp_path, "app")
    queue.push_on("default", "Record", "d1")
    queue.push_on("high", "Record", "h1")
    queue.push_on("default", "Record", "d2")
    queue.push_on("high", "Record", "h2")
    queue.push_on("low", "Record", "not served")

    result = work(tmp_path, database_url, "--queue", "high,default")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "data") == [("h1",), ("h2",), ("d1",), ("d2",)]


@pytest.mark.databases("sqlite")
@pytest.mark.parametrize("value", ["", "high,,default", " "])
def test_an_empty_queue_name_is_refused_and_no_job_runs(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine, value: str
) -> None:
    """``--queue=`` is a slip (an unset shell variable), not a request for
    the default queue: the worker exits 2 naming the option and runs
    nothing."""
    write_jobs(tmp_path, "app")
    queue.push("Record", "waiting")

    result = work(tmp_path, database_url, f"--queue={value}")

    assert result.exit_code == 2, result.output
    assert "Invalid value for --queue" in result.stderr
    assert "empty queue name" in result.stderr
    assert "Traceback" not in result.output
    assert steps(tmp_path, "data") == []
    assert len(rows(engine, "jobs")) == 1


def test_stop_when_empty_stops_with_delayed_jobs_left_and_says_none_was_ready(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``--stop-when-empty`` stops once no job is ready, leaving a delayed
    one for later, and its last line says so rather than "queue empty"."""
    write_jobs(tmp_path, "app")
    queue.push("Record", "now")
    later_id = queue.later(3600, "Record", "in an hour")

    result = work(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "data") == [("now",)]
    assert [row["id"] for row in rows(engine, "jobs")] == [later_id]
    assert "worker stopped (no job ready)" in result.output + result.stderr


def test_a_job_can_push_another_job(
    tmp_path: Path, database_url: str, queue: Queue
) -> None:
    """``self.push(...)`` inside handle() pushes onto the same database; the
    pushed job runs in the same worker run."""
    write_jobs(tmp_path, "app")
    write_jobs(
        tmp_path,
        "chain",
        """
        class Chain(Job):
            def handle(self, data):
                record(self, data=data)
                self.push("Record", {"after": self.context.id}, queue="next")
        """,
    )
    first = queue.push("Chain", "start")

    result = work(tmp_path, database_url, "--queue", "default,next")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "job", "queue", "data") == [
        ("Chain", "default", "start"),
        ("Record", "next", {"after": first}),
    ]


# -- backoff and release ------------------------------------------------------------


def test_backoff_makes_the_retry_wait(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``--backoff=2``: a failed attempt with tries left puts the job back,
    unreserved, due no sooner than 2 s after it failed; a worker started at
    once does not take it."""
    write_jobs(tmp_path, "app")
    queue.push("Boom", "b")

    result = work(tmp_path, database_url, "--tries", "3", "--backoff", "2", "--once")
    after = time.time()

    assert result.exit_code == 0, result.output
    [run] = recorded(tmp_path)
    [row] = rows(engine, "jobs")
    assert row["attempts"] == 1
    assert row["reserved_at"] is None
    assert row["available_at"] >= run["at"] + 2
    assert row["available_at"] <= math.ceil(after) + 2
    assert rows(engine, "failed_jobs") == []

    again = work(tmp_path, database_url, "--tries", "3", "--backoff", "2", "--once")

    assert again.exit_code == 0, again.output
    assert len(recorded(tmp_path)) == 1


def test_a_class_backoff_list_gives_each_retry_its_wait_and_repeats_the_last(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``backoff = [0, 30]`` on the class beats ``--backoff``: retry at once
    after the first failure, 30 s after the second, and 30 s after every
    later one."""
    write_jobs(
        tmp_path,
        "app",
        """
        class Stepped(Job):
            tries = 5
            backoff = [0, 30]

            def handle(self, data):
                record(self, data=data)
                raise ValueError("stepped")
        """,
    )
    queue.push("Stepped", None)

    result = work(tmp_path, database_url, "--backoff", "999")
    after = time.time()

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "attempt") == [(1,), (2,)]
    [row] = rows(engine, "jobs")
    assert row["attempts"] == 2
    second = recorded(tmp_path)[-1]["at"]
    assert second + 30 <= row["available_at"] <= math.ceil(after) + 30

    make_due(engine)
    result = work(tmp_path, database_url, "--backoff", "999", "--once")
    after = time.time()

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "attempt") == [(1,), (2,), (3,)]
    [row] = rows(engine, "jobs")
    third = recorded(tmp_path)[-1]["at"]
    assert third + 30 <= row["available_at"] <= math.ceil(after) + 30


def test_release_puts_the_job_back_after_its_delay_keeping_its_attempts(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``self.context.release(5)`` puts the job back unreserved, due about 5 s
    later, with its attempt counted, and not failed; run again, it sees
    attempt 2."""
    write_jobs(
        tmp_path,
        "app",
        """
        class Later(Job):
            def handle(self, data):
                if self.context.attempt == 1:
                    record(self, step="release")
                    self.context.release(5)
                record(self, step="done")
        """,
    )
    job_id = queue.push("Later", None)

    result = work(tmp_path, database_url, "--tries", "3")
    after = time.time()

    assert result.exit_code == 0, result.output
    [run] = recorded(tmp_path)
    assert run["step"] == "release"
    [row] = rows(engine, "jobs")
    assert row["id"] == job_id
    assert row["attempts"] == 1
    assert row["reserved_at"] is None
    assert run["at"] + 5 <= row["available_at"] <= math.ceil(after) + 5
    assert rows(engine, "failed_jobs") == []

    make_due(engine)
    result = work(tmp_path, database_url, "--tries", "3")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "step", "attempt") == [("release", 1), ("done", 2)]
    assert rows(engine, "jobs") == []


# -- failing for good ----------------------------------------------------------------


def test_failed_hook_runs_exactly_once_when_the_job_fails_for_good(
    tmp_path: Path, database_url: str, queue: Queue
) -> None:
    """``failed(data, error)`` does not run on a retried failure, and runs
    once, with the data and the error's text, when no tries remain."""
    write_jobs(
        tmp_path,
        "app",
        """
        class Hooked(Job):
            tries = 2

            def handle(self, data):
                record(self, step="handle", data=data)
                raise ValueError("hooked")

            def failed(self, data, error):
                record(self, step="failed", data=data, error=error)
        """,
    )
    queue.push("Hooked", {"order": 9})

    result = work(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "step", "data") == [
        ("handle", {"order": 9}),
        ("handle", {"order": 9}),
        ("failed", {"order": 9}),
    ]
    assert "ValueError: hooked" in recorded(tmp_path)[-1]["error"]


def test_context_fail_fails_the_job_at_once_despite_tries_left(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``self.context.fail("card declined")`` with 3 tries: one run, then the
    job is in failed_jobs with that reason and its failed() hook ran once."""
    write_jobs(
        tmp_path,
        "app",
        """
        class Charge(Job):
            def handle(self, data):
                record(self, step="handle")
                self.context.fail("card declined")
                record(self, step="after fail()")

            def failed(self, data, error):
                record(self, step="failed", error=error)
        """,
    )
    queue.push("Charge", {"card": "4242"})

    result = work(tmp_path, database_url, "--tries", "3")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "step") == [("handle",), ("failed",)]
    assert "card declined" in recorded(tmp_path)[-1]["error"]
    assert rows(engine, "jobs") == []
    [failed] = rows(engine, "failed_jobs")
    assert "card declined" in failed["exception"]


def test_unknown_jobs_and_malformed_rows_fail_clearly_and_the_worker_goes_on(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """A row whose payload is not JSON and a job name no module defines each
    end in failed_jobs with a message saying so, and the jobs after them
    run; a second malformed row, in a later run, fails the same way."""
    write_jobs(tmp_path, "app")
    insert_job(engine, "not json")
    queue.push("NoSuchJob", {"a": 1})
    queue.push("Record", "after")

    result = work(tmp_path, database_url, "--tries", "3")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "data") == [("after",)]
    failed = failed_by_job(engine)
    assert sorted(failed) == ["NoSuchJob", "not json"]
    assert "not valid JSON" in failed["not json"]["exception"]
    assert "NoSuchJob" in failed["NoSuchJob"]["exception"]
    assert "no job class" in failed["NoSuchJob"]["exception"]
    assert rows(engine, "jobs") == []

    insert_job(engine, "{broken")
    queue.push("Record", "after again")
    result = work(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "data") == [("after",), ("after again",)]
    failed = failed_by_job(engine)
    assert sorted(failed) == ["NoSuchJob", "not json", "{broken"]
    assert "not valid JSON" in failed["{broken"]["exception"]


# -- when to take a job, when to stop -------------------------------------------------


def test_max_jobs_stops_the_worker_after_that_many(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``--max-jobs=2`` runs two jobs of three, then stops."""
    write_jobs(tmp_path, "app")
    queue.bulk("Record", [1, 2, 3])

    result = work(tmp_path, database_url, "--max-jobs", "2")

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "data") == [(1,), (2,)]
    assert [json.loads(row["payload"])["data"] for row in rows(engine, "jobs")] == [3]


def test_once_runs_a_single_job(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``--once`` runs one job, then stops."""
    write_jobs(tmp_path, "app")
    queue.bulk("Record", ["a", "b"])

    result = run_cli(
        ["queue", "work", "--once", "--sleep", "0"],
        cwd=tmp_path,
        database_url=database_url,
    )

    assert result.exit_code == 0, result.output
    assert steps(tmp_path, "data") == [("a",)]
    assert len(rows(engine, "jobs")) == 1


# -- failed jobs ---------------------------------------------------------------------


TRACE = (
    "Traceback (most recent call last):\n"
    '  File "jobs/app.py", line 3, in handle\n'
    "    raise ValueError(reason)\n"
    "ValueError: {reason}\n"
)


def add_failed(
    queue: Queue,
    *,
    job: str = "Record",
    data: Any = None,
    on: str = "default",
    reason: str = "boom",
    hours_ago: float = 0,
) -> int:
    """A failed_jobs row as a worker writes it; its id."""
    uuid = str(uuid4())
    payload = json.dumps({"uuid": uuid, "job": job, "data": data})
    table = queue.store.tables.failed
    with queue.store.engine.begin() as connection:
        result = connection.execute(
            sa.insert(table).values(
                uuid=uuid,
                queue=on,
                payload=payload,
                exception=TRACE.format(reason=reason),
                failed_at=int(time.time() - hours_ago * 3600),
            )
        )
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


def test_queue_failed_lists_failed_jobs_and_filters_by_queue(
    tmp_path: Path, database_url: str, queue: Queue
) -> None:
    """``queue failed`` lists each failed job's id, queue, job and error
    line; ``--queue`` keeps one queue's; with none it says so."""
    empty = queue_cli(tmp_path, database_url, "failed")
    assert empty.exit_code == 0, empty.output
    assert "No failed jobs." in empty.stdout

    first = add_failed(queue, job="SendInvoice", reason="no such customer")
    second = add_failed(queue, job="SendMail", on="mail", reason="SMTP 550")

    listed = queue_cli(tmp_path, database_url, "failed")

    assert listed.exit_code == 0, listed.output
    cells = {
        cells[2]: cells
        for line in listed.stdout.splitlines()
        if len(cells := [cell.strip() for cell in line.split("│")]) == 5
    }
    invoice, mail = cells["SendInvoice"], cells["SendMail"]
    assert invoice[:2] == [str(first), "default"]
    assert invoice[4] == "ValueError: no such customer"
    assert mail[:2] == [str(second), "mail"]
    assert mail[4] == "ValueError: SMTP 550"

    only_mail = queue_cli(tmp_path, database_url, "failed", "--queue", "mail")

    assert only_mail.exit_code == 0, only_mail.output
    assert "SendMail" in only_mail.stdout
    assert "SendInvoice" not in only_mail.stdout


def test_failed_show_prints_the_payload_and_the_whole_trace(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``queue failed show ID`` prints the job's uuid, queue, name, payload
    and full trace; an unknown id is one error line and exit 1."""
    failed_id = add_failed(queue, job="SendMail", data={"to": "Zoë"}, reason="550")
    [row] = rows(engine, "failed_jobs")

    shown = queue_cli(tmp_path, database_url, "failed", "show", str(failed_id))

    assert shown.exit_code == 0, shown.output
    assert row["uuid"] in shown.stdout
    assert "SendMail" in shown.stdout
    assert '"data": {"to": "Zoë"}' in shown.stdout  # unescaped for reading
    assert row["exception"].rstrip() in shown.stdout

    missing = queue_cli(tmp_path, database_url, "failed", "show", "999999")

    assert missing.exit_code == 1
    assert missing.stderr.strip() == "error: no failed job with id 999999"


def test_retry_id_puts_that_job_back_fresh_and_a_worker_runs_it(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``queue retry ID`` moves that failed job back onto its queue with its
    payload and no attempts, leaves the others, and the job then runs."""
    write_jobs(tmp_path, "app")
    chosen = add_failed(queue, data="again", on="mail")
    other = add_failed(queue, data="stays")
    payload = rows(engine, "failed_jobs")[0]["payload"]

    result = queue_cli(tmp_path, database_url, "retry", str(chosen))

    assert result.exit_code == 0, result.output
    assert "pushed 1 failed job(s)" in result.stdout
    [job] = rows(engine, "jobs")
    assert (job["queue"], job["payload"], job["attempts"]) == ("mail", payload, 0)
    assert job["reserved_at"] is None
    assert job["available_at"] <= int(time.time())
    assert [row["id"] for row in rows(engine, "failed_jobs")] == [other]

    ran = work(tmp_path, database_url, "--queue", "mail")

    assert ran.exit_code == 0, ran.output
    assert steps(tmp_path, "data", "attempt") == [("again", 1)]


def test_retry_all_and_retry_queue_put_back_what_they_name(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``retry --queue=Q`` puts back that queue's failed jobs only; ``retry
    all`` the rest; each keeps its queue and payload."""
    add_failed(queue, data=1, on="mail")
    add_failed(queue, data=2, on="default")
    add_failed(queue, data=3, on="mail")
    payloads = {row["id"]: row["payload"] for row in rows(engine, "failed_jobs")}
    first, _, third = sorted(payloads)

    by_queue = queue_cli(tmp_path, database_url, "retry", "--queue", "mail")

    assert by_queue.exit_code == 0, by_queue.output
    assert "pushed 2 failed job(s)" in by_queue.stdout
    assert [(r["queue"], r["payload"]) for r in rows(engine, "jobs")] == [
        ("mail", payloads[first]),
        ("mail", payloads[third]),
    ]
    assert [r["queue"] for r in rows(engine, "failed_jobs")] == ["default"]

    everything = queue_cli(tmp_path, database_url, "retry", "all")

    assert everything.exit_code == 0, everything.output
    assert "pushed 1 failed job(s)" in everything.stdout
    assert sorted(r["payload"] for r in rows(engine, "jobs")) == sorted(
        payloads.values()
    )
    assert rows(engine, "failed_jobs") == []


def test_retry_of_an_unknown_id_fails_and_moves_nothing(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``retry ID`` naming one id that does not exist is one error line and
    exit 1, and puts back none of the ids given."""
    known = add_failed(queue)

    result = queue_cli(tmp_path, database_url, "retry", str(known), "999999")

    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no failed job with id 999999"
    assert rows(engine, "jobs") == []
    assert [row["id"] for row in rows(engine, "failed_jobs")] == [known]


def test_forget_deletes_one_failed_job(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``queue forget ID`` deletes that failed job only; forgetting it again
    is one error line and exit 1."""
    gone = add_failed(queue)
    kept = add_failed(queue)

    result = queue_cli(tmp_path, database_url, "forget", str(gone))

    assert result.exit_code == 0, result.output
    assert f"forgot failed job {gone}" in result.stdout
    assert [row["id"] for row in rows(engine, "failed_jobs")] == [kept]

    again = queue_cli(tmp_path, database_url, "forget", str(gone))

    assert again.exit_code == 1
    assert again.stderr.strip() == f"error: no failed job with id {gone}"


def test_flush_deletes_failed_jobs_or_only_the_old_ones(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``flush --hours N`` deletes the failed jobs older than N hours only;
    ``flush`` deletes them all."""
    add_failed(queue, data="recent")
    add_failed(queue, data="two hours", hours_ago=2)
    add_failed(queue, data="two days", hours_ago=48)

    def left() -> list[Any]:
        return [json.loads(r["payload"])["data"] for r in rows(engine, "failed_jobs")]

    day = queue_cli(tmp_path, database_url, "flush", "--hours", "24")
    assert day.exit_code == 0, day.output
    assert "deleted 1 failed job(s)" in day.stdout
    assert left() == ["recent", "two hours"]

    hour = queue_cli(tmp_path, database_url, "flush", "--hours", "1")
    assert hour.exit_code == 0, hour.output
    assert left() == ["recent"]

    everything = queue_cli(tmp_path, database_url, "flush")
    assert everything.exit_code == 0, everything.output
    assert "deleted 1 failed job(s)" in everything.stdout
    assert left() == []


def test_clear_deletes_waiting_jobs_but_not_running_ones(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``clear --force --queue Q`` deletes Q's waiting jobs, ``clear --force``
    every queue's; a job a worker holds stays; without --force a "no" to
    the question deletes nothing."""
    queue.push("Record", "held")
    queue.push("Record", "waiting")
    queue.later(600, "Record", "delayed")
    queue.push_on("mail", "Record", "mail")
    held = queue.store.reserve("default")
    assert held is not None

    declined = run_cli(
        ["queue", "clear"], cwd=tmp_path, database_url=database_url, input="n\n"
    )
    assert declined.exit_code == 1
    assert len(rows(engine, "jobs")) == 4

    one = queue_cli(tmp_path, database_url, "clear", "--force", "--queue", "default")
    assert one.exit_code == 0, one.output
    assert "deleted 2 job(s)" in one.stdout
    assert sorted(r["queue"] for r in rows(engine, "jobs")) == ["default", "mail"]

    every = queue_cli(tmp_path, database_url, "clear", "--force")
    assert every.exit_code == 0, every.output
    assert "deleted 1 job(s)" in every.stdout
    assert [r["id"] for r in rows(engine, "jobs")] == [held.id]


def test_status_json_counts_ready_delayed_running_and_failed_per_queue(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``queue status --json`` counts, per queue, the jobs ready, delayed,
    running, expired (held past retry_after) and failed."""
    queue.bulk("Record", [1, 2, 3])
    queue.later(600, "Record", "delayed")
    queue.push_on("mail", "Record", "mail")
    queue.push_on("stuck", "Record", "stuck")
    assert queue.store.reserve("default") is not None
    assert queue.store.reserve("stuck") is not None
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE jobs SET reserved_at = :old WHERE queue = 'stuck'"),
            {"old": int(time.time()) - 1000},
        )
    add_failed(queue)
    add_failed(queue)
    add_failed(queue, on="mail")
    add_failed(queue, on="gone")

    result = queue_cli(tmp_path, database_url, "status", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["workers"] == []
    counts = {
        entry["queue"]: (
            entry["ready"],
            entry["delayed"],
            entry["running"],
            entry["expired"],
            entry["failed"],
        )
        for entry in report["queues"]
    }
    assert counts == {
        "default": (2, 1, 1, 0, 2),
        "mail": (1, 0, 0, 0, 1),
        "stuck": (0, 0, 0, 1, 0),
        "gone": (0, 0, 0, 0, 1),
    }


def test_workers_and_status_with_no_worker_running_say_so(
    tmp_path: Path, database_url: str
) -> None:
    """``queue workers`` with no worker says so; so does ``queue status``,
    which also says there are no jobs."""
    workers = queue_cli(tmp_path, database_url, "workers")
    status = queue_cli(tmp_path, database_url, "status")

    assert workers.exit_code == 0, workers.output
    assert workers.stdout.strip() == "No workers running."
    assert status.exit_code == 0, status.output
    assert "No jobs." in status.stdout
    assert "0 worker(s) running." in status.stdout

"""Pushing jobs on every database: push, push_on, later and bulk, the rows
they write, data JSON cannot hold, hostile names and data, and
``conveyor queue push``. Due times (Q04), text (Q07) and data JSON cannot
hold (Q08) are in ``tests/cases``."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor import Job, Queue
from conveyor.exceptions import PayloadError, QueueError
from helpers import payload_of, recorded, rows, run_cli, table_names, work, write_jobs


class SendMail(Job):
    """A job class whose own queue is ``mail``."""

    queue = "mail"

    def handle(self, data: Any) -> None:  # pragma: no cover - never run here
        pass


@pytest.fixture
def queue(database_url: str) -> Iterator[Queue]:
    client = Queue(database_url)
    yield client
    client.close()


# -- push, push_on, bulk -----------------------------------------------------


def test_push_returns_the_id_of_a_new_row_on_the_default_queue(
    queue: Queue, engine: sa.Engine
) -> None:
    """push() stores one row: default queue, a JSON payload of job name, data
    and a UUID, no attempts, whole epoch seconds; and returns its id."""
    before = time.time()
    job_id = queue.push("SendInvoice", {"invoice": 7, "lines": [1, 2]})
    after = time.time()

    assert isinstance(job_id, int)
    [row] = rows(engine, "jobs")
    assert row["id"] == job_id
    assert row["queue"] == "default"
    body = payload_of(row)
    assert set(body) == {"job", "data", "uuid"}
    assert body["job"] == "SendInvoice"
    assert body["data"] == {"invoice": 7, "lines": [1, 2]}
    assert str(uuid.UUID(body["uuid"])) == body["uuid"]
    assert row["attempts"] == 0
    assert row["reserved_at"] is None
    assert int(before) <= row["created_at"] <= math.ceil(after)
    assert int(before) <= row["available_at"] <= math.ceil(after)


def test_a_pushed_job_is_due_at_once(queue: Queue, engine: sa.Engine) -> None:
    """A job pushed with no delay is available in the very second it was
    pushed, so a worker started right after it takes it."""
    queue.push("SendInvoice", 1)
    now = int(time.time())

    [row] = rows(engine, "jobs")
    assert row["available_at"] <= row["created_at"]
    assert row["available_at"] <= now


def test_push_of_a_class_uses_its_name_and_its_queue(
    queue: Queue, engine: sa.Engine
) -> None:
    """A job class is stored by its class name, on its own ``queue``, unless
    the push names another queue."""
    own = queue.push(SendMail, {"to": "a@example.com"})
    other = queue.push(SendMail, None, queue="urgent")

    by_id = {row["id"]: row for row in rows(engine, "jobs")}
    assert by_id[own]["queue"] == "mail"
    assert by_id[other]["queue"] == "urgent"
    assert payload_of(by_id[own])["job"] == "SendMail"
    assert payload_of(by_id[own])["data"] == {"to": "a@example.com"}
    assert payload_of(by_id[other])["data"] is None


def test_push_on_stores_the_job_on_the_named_queue(
    queue: Queue, engine: sa.Engine
) -> None:
    """push_on(queue, ...) wins over the class's queue and returns the id."""
    first = queue.push_on("reports", "BuildReport", {"month": "2024-05"})
    second = queue.push_on("reports", SendMail, [1])

    assert second > first
    assert [(row["id"], row["queue"]) for row in rows(engine, "jobs")] == [
        (first, "reports"),
        (second, "reports"),
    ]


def test_ids_are_never_handed_out_twice(queue: Queue, engine: sa.Engine) -> None:
    """An id, once returned by a push, is not returned again after its job
    is gone: logs, ``queue push`` output and failed rows stay unambiguous."""
    first = queue.push("SendInvoice", 1)
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM jobs"))

    second = queue.push("SendInvoice", 2)

    assert second > first


def test_bulk_returns_one_id_per_item_in_item_order(
    queue: Queue, engine: sa.Engine
) -> None:
    """bulk() stores one row per item, in order, each with its own UUID, on
    the queue given; the ids come back in the items' order."""
    items = [{"n": n} for n in range(5)]

    ids = queue.bulk("Resize", items, queue="images")

    assert len(ids) == 5
    assert ids == sorted(ids)
    stored = rows(engine, "jobs")
    assert [row["id"] for row in stored] == ids
    assert [payload_of(row)["data"] for row in stored] == items
    assert {row["queue"] for row in stored} == {"images"}
    assert len({payload_of(row)["uuid"] for row in stored}) == 5
    assert all(row["attempts"] == 0 for row in stored)


def test_bulk_of_no_items_stores_nothing(queue: Queue, engine: sa.Engine) -> None:
    """bulk() of an empty list returns no ids and stores no row."""
    assert queue.bulk("Resize", []) == []
    assert rows(engine, "jobs") == []


@pytest.mark.databases("sqlite")
@pytest.mark.parametrize(
    "items",
    ["abc", b"abc", {"tag": "x"}, None, 3],
    ids=["str", "bytes", "dict", "None", "int"],
)
def test_bulk_of_something_not_a_list_is_refused_and_stores_nothing(
    queue: Queue, engine: sa.Engine, items: object
) -> None:
    """A string or a dict is iterable, but a job per character or per key is
    never meant: bulk() refuses them, and what is not iterable at all,
    naming the type, and stores no row."""
    with pytest.raises(PayloadError) as refused:
        queue.bulk("Resize", items)  # type: ignore[arg-type]

    assert str(refused.value) == (
        "bulk(): items must be a list of data, one item per job; got "
        f"{type(items).__name__}"
    )
    assert rows(engine, "jobs") == []


# -- text and hostile input ---------------------------------------------------


HOSTILE_QUEUES = [
    "default'; DROP TABLE jobs; --",
    'say "hi"',
    "back\\slash\\",
    "100%_done %s %(x)s",
    "`tick`; DELETE FROM failed_jobs",
    "Ünïcödé 名前 🚀",
]

HOSTILE_DATA = {
    "'; DROP TABLE jobs; --": "x' OR '1'='1",
    'quote"s': "back\\slash \\' \\\" %s %% %(name)s",
    "percent": "100% _ LIKE '%'",
    "nul": "a\x00b \\x00 \\u0000",
    "nested": [{"'": '"'}, "\\\\"],
}


def test_hostile_queue_names_and_data_are_stored_and_read_back_verbatim(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """Quotes, SQL, backslashes and percent signs in queue names and data are
    stored as given, served by a worker naming those queues, reach the job
    unchanged, and leave every table in place."""
    write_jobs(tmp_path, "app")
    ids = [queue.push_on(name, "Record", HOSTILE_DATA) for name in HOSTILE_QUEUES]

    stored = rows(engine, "jobs")
    assert [row["id"] for row in stored] == ids
    assert [row["queue"] for row in stored] == HOSTILE_QUEUES
    assert all(payload_of(row)["data"] == HOSTILE_DATA for row in stored)

    result = work(tmp_path, database_url, "--queue", ",".join(HOSTILE_QUEUES))

    assert result.exit_code == 0, result.output
    runs = recorded(tmp_path)
    assert [run["queue"] for run in runs] == HOSTILE_QUEUES
    assert all(run["data"] == HOSTILE_DATA for run in runs)
    assert {"jobs", "failed_jobs", "job_workers"} <= table_names(engine)
    assert rows(engine, "jobs") == []


def test_a_worker_takes_only_jobs_of_its_exact_queue_name(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """Queue names are compared exactly: a worker on ``mail`` leaves the jobs
    of ``Mail``, ``MAIL`` and ``maïl`` alone."""
    write_jobs(tmp_path, "app")
    for name in ["Mail", "maïl", "MAIL", "mail"]:
        queue.push_on(name, "Record", name)

    result = work(tmp_path, database_url, "--queue", "mail")

    assert result.exit_code == 0, result.output
    assert [run["data"] for run in recorded(tmp_path)] == ["mail"]
    assert sorted(row["queue"] for row in rows(engine, "jobs")) == sorted(
        ["Mail", "maïl", "MAIL"]
    )


@pytest.mark.parametrize("name", ["mail ", " mail", "mail\t", ""])
def test_queue_names_with_surrounding_white_space_are_refused(
    queue: Queue, engine: sa.Engine, name: str
) -> None:
    """A name MySQL would compare equal to another (trailing spaces), or an
    empty one, is refused at push and nothing is stored."""
    with pytest.raises(QueueError, match="queue name"):
        queue.push_on(name, "Record", {})

    assert rows(engine, "jobs") == []


def test_a_large_payload_is_stored_whole(queue: Queue, engine: sa.Engine) -> None:
    """Data of a few hundred KiB (past MySQL's 64 KiB TEXT) is kept whole."""
    data = {"body": "Zoë 🚀 " * 50_000}

    queue.push("SendNewsletter", data)

    [row] = rows(engine, "jobs")
    assert payload_of(row)["data"] == data


# -- conveyor queue push ------------------------------------------------------


def test_cli_push_stores_the_job_and_prints_its_id(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """``queue push JOB --data JSON --queue Q`` stores the job and says its
    id."""
    result = run_cli(
        ["queue", "push", "SendInvoice", "--data", '{"id": 5, "who": "Zoë"}']
        + ["--queue", "billing"],
        cwd=tmp_path,
        database_url=database_url,
    )

    assert result.exit_code == 0, result.output
    [row] = rows(engine, "jobs")
    assert result.stdout.strip() == f"pushed SendInvoice as job {row['id']}"
    assert row["queue"] == "billing"
    assert payload_of(row)["job"] == "SendInvoice"
    assert payload_of(row)["data"] == {"id": 5, "who": "Zoë"}


def test_cli_push_with_a_delay_is_not_due_before_it(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """``--delay S`` makes the job due S seconds from now, rounded up."""
    before = time.time()
    result = run_cli(
        ["queue", "push", "SendReminder", "--delay", "45"],
        cwd=tmp_path,
        database_url=database_url,
    )
    after = time.time()

    assert result.exit_code == 0, result.output
    [row] = rows(engine, "jobs")
    assert math.ceil(before + 45) <= row["available_at"] <= math.ceil(after + 45)
    assert row["queue"] == "default"
    assert payload_of(row)["data"] is None


@pytest.mark.parametrize("bad", ["{not json", ""], ids=["broken", "empty"])
def test_cli_push_with_bad_json_data_fails_in_one_line(
    tmp_path: Path, database_url: str, engine: sa.Engine, bad: str
) -> None:
    """Data that is not JSON is refused with one error line naming --data,
    no traceback, and nothing stored."""
    result = run_cli(
        ["queue", "push", "SendInvoice", "--data", bad],
        cwd=tmp_path,
        database_url=database_url,
    )

    assert result.exit_code in (1, 2)
    errors = [
        line for line in result.stderr.splitlines() if line.lower().startswith("error")
    ]
    assert len(errors) == 1, result.output
    assert "--data" in errors[0]
    assert "JSON" in errors[0]
    assert "Traceback" not in result.output
    assert rows(engine, "jobs") == []


def test_cli_push_refusals_are_one_line_and_store_nothing(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """JSON the queue refuses (NaN) and job names that are not class names
    end with exit 1 and one ``error:`` line naming them; nothing is stored."""
    for args, named in [
        (["SendInvoice", "--data", '{"ratio": NaN}'], "ratio"),
        (["not-a-class", "--data", "1"], "not-a-class"),
        (["os.system", "--data", "1"], "os.system"),
    ]:
        result = run_cli(
            ["queue", "push", *args], cwd=tmp_path, database_url=database_url
        )

        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error: "), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert named in result.stderr

    assert rows(engine, "jobs") == []

"""Case Q07: non-ASCII text in a payload.

``push("Record", {"name": "Zoë Ålberg 名前 🚀"})`` reaches the job as
identical text on SQLite, PostgreSQL and MySQL/MariaDB (``utf8mb4``), and
``queue status``, ``queue failed`` and ``queue failed show`` print it
intact. On MySQL/MariaDB a jobs table created by hand with the 3-byte
``utf8`` (``utf8mb3``) character set either stores the text escaped, so the
job still gets it whole, or refuses the push with a clear error: never
silently mangled. A string with a lone surrogate is refused at push, naming
the key, and nothing is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor import Queue
from conveyor.exceptions import PayloadError
from helpers import (
    payload_of,
    queue_cli,
    recorded,
    rows,
    work,
    write_jobs,
)

NON_ASCII = {
    "name": "Zoë Ålberg 名前 🚀",
    "Ключ": ["ß", "é\u0301", "\u200b", "🇸🇪"],
    "note": "tab\there\nnew line",
}

#: The case's text: Latin-1, CJK (3 bytes in UTF-8) and an emoji (4 bytes).
NAME = "Zoë 名前 🚀"


def test_non_ascii_data_round_trips_through_a_worker(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """Accents, CJK, emoji and combining characters reach the job exactly as
    pushed, on every database."""
    write_jobs(tmp_path, "app")
    queue.push("Record", NON_ASCII)
    [row] = rows(engine, "jobs")
    assert payload_of(row)["data"] == NON_ASCII

    result = work(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    assert [run["data"] for run in recorded(tmp_path)] == [NON_ASCII]
    assert rows(engine, "jobs") == []


def test_status_and_failed_print_non_ascii_text_intact(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """A job on the queue ``Zoë-名前`` whose data and error message hold the
    case's text fails: ``queue status`` (table and ``--json``) shows the
    queue's name and its failed job, ``queue failed`` the queue and the
    error line, and ``queue failed show`` the payload and the trace, each
    with the text exactly as pushed."""
    write_jobs(
        tmp_path,
        "shout",
        """
        class Shout(Job):
            def handle(self, data):
                record(self, data=data)
                raise ValueError(data["name"])
        """,
    )
    on = "Zoë-名前"
    queue.push_on(on, "Shout", {"name": NAME})
    queue.push_on(on, "Shout", {"name": NAME, "waiting": True})
    [first, _] = rows(engine, "jobs")

    result = work(tmp_path, database_url, "--queue", on, "--once")

    assert result.exit_code == 0, result.output
    assert [run["data"] for run in recorded(tmp_path)] == [{"name": NAME}]
    [failed] = rows(engine, "failed_jobs")
    assert failed["queue"] == on
    assert failed["payload"] == first["payload"]
    assert f"ValueError: {NAME}" in failed["exception"]

    status = queue_cli(tmp_path, database_url, "status")

    assert status.exit_code == 0, status.output
    [line] = [line for line in status.stdout.splitlines() if on in line]
    cells = [cell.strip() for cell in line.split("│")]
    assert cells[0] == on, status.stdout
    assert cells[1:6] == ["1", "0", "0", "0", "1"], status.stdout  # ready, failed

    as_json = queue_cli(tmp_path, database_url, "status", "--json")

    assert as_json.exit_code == 0, as_json.output
    [counts] = json.loads(as_json.stdout)["queues"]
    assert (counts["queue"], counts["ready"], counts["failed"]) == (on, 1, 1)

    listed = queue_cli(tmp_path, database_url, "failed")

    assert listed.exit_code == 0, listed.output
    [line] = [line for line in listed.stdout.splitlines() if "Shout" in line]
    cells = [cell.strip() for cell in line.split("│")]
    assert cells[:3] == [str(failed["id"]), on, "Shout"], listed.stdout
    assert cells[4] == f"ValueError: {NAME}", listed.stdout

    shown = queue_cli(tmp_path, database_url, "failed", "show", str(failed["id"]))

    assert shown.exit_code == 0, shown.output
    assert f"queue:     {on}\n" in shown.stdout
    readable = json.dumps(json.loads(failed["payload"]), ensure_ascii=False)
    assert f"payload:   {readable}\n" in shown.stdout
    assert NAME in readable  # shown as text, not \\u escapes
    assert failed["exception"].rstrip() in shown.stdout
    assert shown.stdout.rstrip().endswith(f"ValueError: {NAME}")


def test_a_lone_surrogate_is_refused_at_push_naming_the_key(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """A lone surrogate (text that is not valid Unicode) in a value, deep in
    a list, or in a key, is refused by ``push``, ``bulk`` and
    ``queue push`` with one line naming the key (and a bulk's item);
    nothing is stored."""
    queue.push("Record", {"fine": NAME})
    refused = {
        "value": ({"name": "caf\udce9"}, "data['name']"),
        "nested": ({"people": [{"name": "ok"}, {"name": "\ud800"}]}, "[1]['name']"),
        "key": ({"caf\udce9": 1}, "(the key)"),
    }

    for case, (data, named) in refused.items():
        with pytest.raises(PayloadError) as raised:
            queue.push("Record", data)
        message = str(raised.value)
        assert named in message, (case, message)
        assert "surrogate" in message, (case, message)
        assert len(message.splitlines()) == 1, (case, message)

    with pytest.raises(PayloadError, match=r"^items\[1\]\['name'\].*surrogate"):
        queue.bulk("Record", [{"name": NAME}, {"name": "caf\udce9"}])

    # A JSON \u escape is how a shell can pass one.
    result = queue_cli(
        tmp_path, database_url, "push", "Record", "--data", '{"name": "caf\\udce9"}'
    )

    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: data['name']: "), result.stderr
    assert "surrogate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert [payload_of(row)["data"] for row in rows(engine, "jobs")] == [{"fine": NAME}]


#: The product's jobs table (``conveyor.drivers.tables``), written by hand
#: with the 3-byte ``utf8`` character set an older schema may still use.
UTF8MB3_JOBS = """
CREATE TABLE jobs (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    queue VARCHAR(255) COLLATE utf8mb3_bin NOT NULL,
    payload LONGTEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reserved_at BIGINT NULL,
    available_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    reservation VARCHAR(32) NULL,
    reserved_by VARCHAR(32) NULL,
    crashes INTEGER NOT NULL DEFAULT 0,
    INDEX ix_jobs_queue (queue, reserved_at, id)
) DEFAULT CHARSET=utf8mb3
"""


def push_to_a_utf8mb3_table(url: str, engine: sa.Engine) -> tuple[bool, str]:
    """Push :data:`NAME` onto the hand-made 3-byte table; whether it was
    stored, and the error if it was not. Asserts that a refusal stores
    nothing and names the payload column."""
    with engine.begin() as connection:
        connection.execute(sa.text(UTF8MB3_JOBS))
    client = Queue(url)
    try:
        client.push("Record", {"name": NAME})
    except Exception as exc:
        message = str(exc)
        assert "payload" in message, message
        assert rows(engine, "jobs") == []
        return False, message
    finally:
        client.close()
    return True, ""


@pytest.mark.databases("mysql")
def test_a_utf8mb3_jobs_table_never_gets_mangled_text(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """On a jobs table created as ``utf8mb3`` (which cannot hold the 4-byte
    🚀), the payload is stored as ASCII JSON with ``\\u`` escapes, so the
    job receives the text identical; so does text of 3-byte characters
    only (``Zoë 名前``)."""
    write_jobs(tmp_path, "app")

    stored, error = push_to_a_utf8mb3_table(database_url, engine)

    assert stored, error
    [row] = rows(engine, "jobs")
    assert row["payload"].isascii(), row["payload"]
    assert payload_of(row)["data"] == {"name": NAME}
    client = Queue(database_url)
    try:
        client.push("Record", {"name": "Zoë 名前"})
    finally:
        client.close()

    result = work(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    assert [run["data"] for run in recorded(tmp_path)] == [
        {"name": NAME},
        {"name": "Zoë 名前"},
    ]
    assert rows(engine, "jobs") == []
    assert rows(engine, "failed_jobs") == []


@pytest.mark.databases("mysql")
def test_a_utf8mb3_jobs_table_never_gets_mangled_text_without_strict_mode(
    database_url: str, engine: sa.Engine
) -> None:
    """The same push through a connection whose ``sql_mode`` is not strict
    (MySQL before 5.7, or a server configured so), where the server would
    store ``?`` for what the column cannot hold and only warn: the text
    is stored identical all the same, never mangled."""
    lenient = (
        sa.make_url(database_url)
        .update_query_dict({"init_command": "SET sql_mode = ''"})
        .render_as_string(hide_password=False)
    )

    stored, error = push_to_a_utf8mb3_table(lenient, engine)

    assert stored, error
    [row] = rows(engine, "jobs")
    assert payload_of(row)["data"] == {"name": NAME}, row["payload"]

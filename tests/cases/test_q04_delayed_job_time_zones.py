"""Case Q04: a delayed job runs at the wrong hour because of time zones.

The application's process runs with ``TZ=Europe/Berlin`` while its
database session's time zone is America/New_York (SQLite has none). It
pushes ``later(600, ...)``, ``later(<aware datetime now + 10 min>, ...)``
and ``later(<naive datetime now + 10 min>, ...)`` and a worker starts at
once. Right result: ``available_at`` is stored as the UTC epoch second the
application computed (``math.ceil(time.time() + 600)``), never from the
database's ``NOW()`` or a local wall clock; the naive datetime is refused
with a clear error and nothing is stored; the worker runs none of the
10-minute jobs; ``queue status`` shows the same figures under any ``TZ``.
Since a test cannot wait 10 minutes, a job pushed with ``later(2)`` the
same way shows a delayed job running no earlier than due and within
``--sleep`` of it. The moved tests below check the stored due times of
every kind of delay, and a delayed job left alone by a worker until due."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor import Queue
from conveyor.exceptions import QueueError
from helpers import (
    Spawn,
    make_due,
    payload_of,
    recorded,
    rows,
    runs,
    steps,
    table,
    wait_for_workers,
    wait_until,
    work,
    write_jobs,
)

APP_ZONE = "Europe/Berlin"

#: Run with ``TZ=Europe/Berlin`` and the database URL as its argument: the
#: three pushes of the case and a ``later(2)``, each timed by this process's
#: clock; prints what it saw as JSON.
PUSH_SCRIPT = """
import datetime as dt
import json
import sys
import time
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from conveyor import Queue
from conveyor.exceptions import QueueError

queue = Queue(sys.argv[1])
queue.store.ensure_tables()
out = {"tzname": list(time.tzname), "session_zone": None}
zone_query = {
    "postgresql": "SHOW timezone",
    "mysql": "SELECT @@session.time_zone",
}.get(queue.store.family)
if zone_query:
    with queue.store.engine.connect() as connection:
        out["session_zone"] = connection.exec_driver_sql(zone_query).scalar()

before = time.time()
out["seconds"] = queue.later(600, "Record", {"k": "v"})
out["seconds_window"] = [before, time.time()]

berlin = dt.datetime.now(ZoneInfo("Europe/Berlin")) + dt.timedelta(minutes=10)
local = dt.datetime.now().astimezone() + dt.timedelta(minutes=10)
out["berlin"] = queue.later(berlin, "Record", {"k": "berlin"})
out["berlin_epoch"] = berlin.timestamp()
out["local"] = queue.later(local, "Record", {"k": "local"})
out["local_epoch"] = local.timestamp()

naive = dt.datetime.now() + dt.timedelta(minutes=10)
try:
    queue.later(naive, "Record", {"k": "naive"})
except QueueError as exc:
    out["naive_error"] = str(exc)
else:
    out["naive_error"] = None

before = time.time()
out["short"] = queue.later(2, "Record", {"k": "short"})
out["short_window"] = [before, time.time()]
queue.close()
print(json.dumps(out))
"""


def in_new_york(database_url: str, database_name: str) -> str:
    """``database_url`` whose sessions run in New York time: PostgreSQL's
    ``timezone`` setting; on MariaDB, whose time zone tables may not be
    loaded, its December offset ``-05:00``."""
    url = sa.make_url(database_url)
    if database_name == "postgresql":
        options = url.query.get("options", "")
        url = url.update_query_dict(
            {"options": f"{options} -ctimezone=America/New_York".strip()}
        )
    elif database_name == "mysql":
        url = url.update_query_dict({"init_command": "SET time_zone = '-05:00'"})
    return url.render_as_string(hide_password=False)


def conveyor_in_zone(
    app: Path, zone: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``python -m conveyor ARGS`` in ``app`` with ``TZ=zone``."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": zone},
    )


@pytest.mark.slow
def test_delays_from_berlin_with_a_new_york_session_are_utc_epochs_of_the_app(
    app: Path,
    database_url: str,
    database_name: str,
    engine: sa.Engine,
    spawn: Spawn,
) -> None:
    """Pushed from a ``TZ=Europe/Berlin`` process over a New York session:
    ``later(600)`` is stored as ``ceil(time.time() + 600)`` of that process
    and each aware datetime as its own UTC epoch second; the naive datetime
    is refused, naming the problem, and stores nothing. A worker started at
    once (also in Berlin, over a New York session) warns of no clock skew,
    runs ``later(2)`` no earlier than due and within ``--sleep`` (plus a
    second of slack) of it being due with the worker polling, and none of
    the 10-minute jobs, which stay unreserved. ``queue status
    --json`` under ``TZ=UTC`` and ``TZ=Europe/Berlin`` prints the same: 3
    delayed, nothing else."""
    url = in_new_york(database_url, database_name)
    pushed = subprocess.run(
        [sys.executable, "-c", PUSH_SCRIPT, url],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": APP_ZONE},
    )
    assert pushed.returncode == 0, pushed.stderr
    out: dict[str, Any] = json.loads(pushed.stdout)
    # Read before any worker runs: the later(2) job may be gone once one has
    # started, which can take longer than 2 s on a busy machine.
    due = {payload_of(row)["data"]["k"]: row for row in table(engine, "jobs")}
    worker = spawn("--sleep=0.5", url=url, env={"TZ": APP_ZONE})
    wait_for_workers(engine, [worker])
    worker_ready = time.time()

    assert out["tzname"] == ["CET", "CEST"]
    assert (
        out["session_zone"]
        == {
            "sqlite": None,
            "postgresql": "America/New_York",
            "mysql": "-05:00",
        }[database_name]
    )
    assert out["naive_error"] is not None and "naive" in out["naive_error"]
    assert sorted(due) == ["berlin", "local", "short", "v"], "naive one stored"
    low, high = out["seconds_window"]
    assert math.ceil(low + 600) <= due["v"]["available_at"] <= math.ceil(high + 600)
    assert due["berlin"]["available_at"] == math.ceil(out["berlin_epoch"])
    assert due["local"]["available_at"] == math.ceil(out["local_epoch"])
    low, high = out["short_window"]
    short_due = due["short"]["available_at"]
    assert math.ceil(low + 2) <= short_due <= math.ceil(high + 2)
    assert [due[k]["id"] for k in ("v", "berlin", "local", "short")] == [
        out[k] for k in ("seconds", "berlin", "local", "short")
    ]

    [ran] = wait_until(lambda: runs(app, "run"), 20, "the later(2) job ran")
    time.sleep(0.6)  # one more poll, in which nothing else may become due
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0, worker.log

    assert ran["data"] == {"k": "short"}
    assert ran["time"] >= short_due, f"ran {short_due - ran['time']:.2f} s early"
    late = ran["time"] - max(short_due, worker_ready)
    assert late < 0.5 + 1, f"ran {late:.2f} s after it was due and a worker polled"
    assert [r["data"] for r in runs(app, "run")] == [{"k": "short"}]
    assert "clock" not in worker.log, worker.log
    left = table(engine, "jobs")
    assert sorted(payload_of(row)["data"]["k"] for row in left) == [
        "berlin",
        "local",
        "v",
    ]
    assert {(row["attempts"], row["reserved_at"]) for row in left} == {(0, None)}

    reports = {}
    for zone in ("UTC", APP_ZONE):
        status = conveyor_in_zone(
            app, zone, "queue", "status", "--json", "--database", url
        )
        assert status.returncode == 0, status.stderr
        reports[zone] = json.loads(status.stdout)
    assert reports["UTC"] == reports[APP_ZONE]
    assert reports["UTC"]["queues"] == [
        {
            "queue": "default",
            "ready": 0,
            "delayed": 3,
            "running": 0,
            "expired": 0,
            "failed": 0,
            "oldest_ready_age": None,
        }
    ]


def test_later_makes_the_job_due_after_the_delay_rounded_up(
    queue: Queue, engine: sa.Engine
) -> None:
    """later(delay) with seconds (int or float) or a timedelta stores
    available_at = now + delay rounded up to the next whole second: never
    earlier than asked."""
    delays: list[float | dt.timedelta] = [
        30,
        2.5,
        dt.timedelta(minutes=2),
        dt.timedelta(seconds=0.2),
    ]
    bounds = {}
    for delay in delays:
        seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else delay
        before = time.time()
        job_id = queue.later(delay, "SendReminder", {"user": 3})
        after = time.time()
        bounds[job_id] = (math.ceil(before + seconds), math.ceil(after + seconds))

    stored = rows(engine, "jobs")
    assert [row["id"] for row in stored] == list(bounds)
    for row in stored:
        low, high = bounds[row["id"]]
        assert low <= row["available_at"] <= high, row
        assert row["attempts"] == 0


def test_later_with_an_aware_datetime_is_due_at_that_moment(
    queue: Queue, engine: sa.Engine
) -> None:
    """An aware datetime is due at that instant, whatever its time zone
    (rounded up to the whole second)."""
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    due = [
        dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=90.4),
        dt.datetime.now(india) + dt.timedelta(seconds=90.4),
    ]

    for moment in due:
        queue.later(moment, "SendReminder", None)

    assert [row["available_at"] for row in rows(engine, "jobs")] == [
        math.ceil(moment.timestamp()) for moment in due
    ]


def test_later_refuses_a_naive_datetime_and_stores_nothing(
    queue: Queue, engine: sa.Engine
) -> None:
    """A naive datetime is refused (its time zone would be a guess) and no
    row is written."""
    queue.push("SendReminder", "kept")

    with pytest.raises(QueueError, match="naive"):
        queue.later(dt.datetime.now() + dt.timedelta(minutes=5), "SendReminder", 1)

    assert [payload_of(row)["data"] for row in rows(engine, "jobs")] == ["kept"]


def test_a_delayed_job_is_left_alone_until_it_is_due(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """A job pushed with later(3) is left alone by a worker started at once,
    and run by the next worker once its time has come (the row's due time
    is moved to now rather than waiting 3 s)."""
    write_jobs(tmp_path, "app")
    queue.later(3, "Record", "late")

    early = work(tmp_path, database_url)

    assert early.exit_code == 0, early.output
    assert recorded(tmp_path) == []
    [row] = rows(engine, "jobs")
    assert row["attempts"] == 0
    assert row["reserved_at"] is None

    make_due(engine)
    due = work(tmp_path, database_url)

    assert due.exit_code == 0, due.output
    assert steps(tmp_path, "data") == [("late",)]
    assert rows(engine, "jobs") == []

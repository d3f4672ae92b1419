"""Case Q08: dates, decimals and bytes in job data, and a datetime as the
run-after time.

Conveyor's payloads are JSON and only JSON (README, "Pushing"): data JSON
cannot hold exactly, such as an aware datetime, a Decimal, bytes or a date,
is refused at push time with a one-line error naming the key and how to
pass it instead, before any row is written; one such item refuses a whole
bulk. ``later()`` with an aware datetime always works, in any time zone,
and the job runs once it is due."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor import Queue
from conveyor.exceptions import PayloadError
from helpers import make_due, payload_of, recorded, rows, work, write_jobs

UTC = dt.timezone.utc


def test_bulk_with_one_refused_item_stores_none_of_them(
    queue: Queue, engine: sa.Engine
) -> None:
    """One item JSON cannot hold refuses the whole bulk: no row is stored."""
    queue.push("Resize", 0)

    with pytest.raises(PayloadError, match="when"):
        queue.bulk("Resize", [{"n": 1}, {"when": dt.date(2024, 1, 1)}, {"n": 3}])

    assert len(rows(engine, "jobs")) == 1


REFUSED = {
    "datetime": ({"when": dt.datetime(2024, 5, 1, 12, 0)}, ["when", "datetime"]),
    "decimal": ({"price": Decimal("9.99")}, ["price", "Decimal"]),
    "bytes": ({"blob": b"\x00\x01"}, ["blob", "bytes"]),
    "set": ({"tags": {"a", "b"}}, ["tags", "set"]),
    "nan": ({"ratio": float("nan")}, ["ratio", "nan"]),
    "infinity": ({"limit": float("inf")}, ["limit", "inf"]),
    "lone surrogate": ({"name": "ok \ud800 not"}, ["name", "surrogate"]),
    "int key": ({"outer": {1: "one"}}, ["outer", "1"]),
    "nested": ({"items": [1, {"at": dt.time(9, 30)}]}, ["items", "[1]", "at"]),
}


def test_data_json_cannot_hold_is_refused_naming_the_key(
    queue: Queue, engine: sa.Engine
) -> None:
    """push() refuses datetimes, decimals, bytes, sets, NaN, infinity, lone
    surrogates and non-string keys, at any depth, with a one-line error
    naming the key and what is wrong with it; nothing is stored."""
    queue.push("SendInvoice", {"fine": True})

    for case, (data, named) in REFUSED.items():
        with pytest.raises(PayloadError) as raised:
            queue.push("SendInvoice", data)
        message = str(raised.value)
        assert all(word in message for word in named), (case, message)
        assert len(message.splitlines()) == 1, (case, message)

    assert [payload_of(row)["data"] for row in rows(engine, "jobs")] == [{"fine": True}]


#: The case's data, in its order.
MIXED = {
    "when": dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC),
    "amount": Decimal("9.99"),
    "blob": b"\x00\x01",
    "day": dt.date(2030, 1, 1),
}

#: What the error for each of :data:`MIXED`'s values says to do instead.
HINTS = {
    "when": "a datetime is not JSON; pass value.isoformat()",
    "amount": "a Decimal is not JSON; pass str(value)",
    "blob": "a bytes is not JSON; pass base64.b64encode(value).decode()",
    "day": "a date is not JSON; pass value.isoformat()",
}


def test_the_case_s_datetime_decimal_bytes_and_date_are_refused_before_a_write(
    queue: Queue, engine: sa.Engine
) -> None:
    """``push("Echo", MIXED)`` fails with one line naming its first key,
    ``data['when']``, and saying how to pass an aware datetime instead; so
    does ``later()``, and ``bulk()`` names the item too, ``items[1]['when']``.
    Each value alone is refused the same way, naming its own key. No row is
    written, not even the tables' first job."""
    with pytest.raises(PayloadError) as raised:
        queue.push("Echo", MIXED)
    message = str(raised.value)
    assert message.startswith("data['when']: " + HINTS["when"]), message
    assert len(message.splitlines()) == 1, message

    with pytest.raises(PayloadError, match=r"^data\['when'\]: "):
        queue.later(dt.datetime(2030, 1, 1, tzinfo=UTC), "Echo", MIXED)
    with pytest.raises(PayloadError, match=r"^items\[1\]\['when'\]: "):
        queue.bulk("Echo", [{"n": 1}, MIXED])

    for key, value in MIXED.items():
        with pytest.raises(PayloadError) as raised:
            queue.push("Echo", {"fine": 1, key: value})
        message = str(raised.value)
        assert message.startswith(f"data[{key!r}]: {HINTS[key]}"), message
        assert len(message.splitlines()) == 1, message

    assert rows(engine, "jobs") == []


def test_later_with_an_aware_datetime_works_and_the_job_runs(
    tmp_path: Path, database_url: str, queue: Queue, engine: sa.Engine
) -> None:
    """``later()`` accepts an aware datetime in UTC or another zone: one in
    the past is due at once and the next worker runs it; one in 2030 is due
    at exactly that second, left alone by that worker, and runs (with the
    ISO text it carries, which is how a datetime travels) once it is due."""
    write_jobs(tmp_path, "app")
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    past = dt.datetime(2020, 1, 1, 12, 0, tzinfo=india)
    future = dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    queue.later(past, "Record", {"when": past.isoformat()})
    queue.later(future, "Record", {"when": future.isoformat()})

    due_at = {payload_of(row)["data"]["when"]: row for row in rows(engine, "jobs")}
    assert due_at[past.isoformat()]["available_at"] <= math.ceil(
        dt.datetime.now(UTC).timestamp()
    )
    assert due_at[future.isoformat()]["available_at"] == 1893499200

    first = work(tmp_path, database_url)

    assert first.exit_code == 0, first.output
    assert [run["data"] for run in recorded(tmp_path)] == [
        {"when": "2020-01-01T12:00:00+05:30"}
    ]
    [waiting] = rows(engine, "jobs")
    assert (waiting["attempts"], waiting["reserved_at"]) == (0, None)

    make_due(engine)
    second = work(tmp_path, database_url)

    assert second.exit_code == 0, second.output
    when = [run["data"]["when"] for run in recorded(tmp_path)]
    assert when == ["2020-01-01T12:00:00+05:30", "2030-01-01T12:00:00+00:00"]
    assert dt.datetime.fromisoformat(when[1]) == future
    assert rows(engine, "jobs") == []

"""How a push reaches the table on every database: one statement in
autocommit when the jobs fit in one, a transaction when they do not; the
ids in the jobs' order either way, nothing stored when any row is refused,
and on PostgreSQL the notification that wakes an idle worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor import Queue
from conveyor.config import QueueSettings, Settings
from conveyor.drivers.base import NewJob
from conveyor.drivers.driver_sql import DriverStatement
from conveyor.drivers.inserting import ROWS_PER_STATEMENT
from conveyor.worker.wakeup import Wakeup
from helpers import drop_worker_connections, payload_of, rows, tagged_url

#: Enough jobs for the bulk to take two statements, in one transaction.
OVER_ONE_STATEMENT = ROWS_PER_STATEMENT + 7


@pytest.fixture
def own_queue(database_url: str) -> Iterator[Queue]:
    """A ``Queue`` on a jobs table of its own name: a channel's name holds
    for the whole database, and other tests' pushes must not be heard."""
    table = f"jobs_{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=database_url,
        queue=replace(QueueSettings(), table=table),
    )
    client = Queue(settings=settings)
    client.store.ensure_tables()
    yield client
    client.close()


def job_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    return rows(engine, "jobs")


@pytest.mark.parametrize("count", [1, 2, 100, OVER_ONE_STATEMENT])
def test_bulk_returns_the_ids_in_the_order_of_the_items(
    queue: Queue, engine: sa.Engine, count: int
) -> None:
    """Each id names the row of its own item, for a bulk of one statement
    and for one that needs two."""
    ids = queue.bulk("Resize", [{"n": n} for n in range(count)])

    assert len(set(ids)) == count
    by_id = {row["id"]: payload_of(row)["data"]["n"] for row in job_rows(engine)}
    assert [by_id[job_id] for job_id in ids] == list(range(count))


def test_pushes_between_bulks_keep_every_bulk_in_order(
    queue: Queue, engine: sa.Engine
) -> None:
    """Ids keep rising across single pushes and bulks, and each bulk's ids
    still match its items."""
    first = queue.push("Resize", {"n": -1})
    ids = queue.bulk("Resize", [{"n": n} for n in range(50)])
    last = queue.push("Resize", {"n": 50})

    assert first < min(ids) and max(ids) < last
    by_id = {row["id"]: payload_of(row)["data"]["n"] for row in job_rows(engine)}
    assert [by_id[job_id] for job_id in ids] == list(range(50))


@pytest.mark.parametrize("count", [5, OVER_ONE_STATEMENT])
def test_a_bulk_with_a_row_the_database_refuses_stores_nothing(
    queue: Queue, engine: sa.Engine, count: int
) -> None:
    """A row the database refuses (here a missing due time, which the
    column does not allow) as the last of the bulk: the rows before it,
    in its statement or in an earlier one, are not kept either."""
    jobs = [NewJob("default", '{"job": "Resize"}', 0) for _ in range(count)]
    jobs[-1] = NewJob("default", '{"job": "Resize"}', None)  # type: ignore[arg-type]

    with pytest.raises(sa.exc.IntegrityError):
        queue.store.push(jobs)

    assert job_rows(engine) == []
    assert len(queue.bulk("Resize", [{}, {}])) == 2


def test_a_refused_push_leaves_the_next_push_working(
    queue: Queue, engine: sa.Engine
) -> None:
    """The connection a refused single push used goes back to the pool
    usable: the next push stores its job."""
    bad = NewJob("default", '{"job": "Resize"}', None)  # type: ignore[arg-type]
    with pytest.raises(sa.exc.IntegrityError):
        queue.store.push([bad])

    job_id = queue.push("Resize", {})

    assert [row["id"] for row in job_rows(engine)] == [job_id]


@pytest.mark.databases("postgresql")
@pytest.mark.parametrize("count", [1, 100, OVER_ONE_STATEMENT])
def test_a_push_wakes_an_idle_worker_on_postgresql(
    own_queue: Queue, count: int
) -> None:
    """An idle worker's wait ends on the push's notification, whether the
    push was one statement in autocommit or a transaction of several; and
    one bulk wakes it once."""
    wakeup = Wakeup(own_queue.store)
    wakeup.start()
    try:
        assert wakeup.wait(0.05) is False

        own_queue.bulk("Resize", [{} for _ in range(count)])

        assert wakeup.wait(10) is True
        assert wakeup.wait(0.05) is False
    finally:
        wakeup.close()


@pytest.mark.databases("postgresql")
def test_a_refused_bulk_wakes_no_worker(own_queue: Queue) -> None:
    """No notification leaves with jobs that were not stored."""
    wakeup = Wakeup(own_queue.store)
    wakeup.start()
    try:
        bad = NewJob("default", '{"job": "Resize"}', None)  # type: ignore[arg-type]
        with pytest.raises(sa.exc.IntegrityError):
            own_queue.store.push([NewJob("default", '{"job": "Resize"}', 0), bad])

        assert wakeup.wait(0.5) is False
    finally:
        wakeup.close()


@pytest.mark.databases("postgresql", "mysql")
def test_a_push_on_a_connection_the_server_closed_fails_once_then_pushes_again(
    database_url: str, database_name: str, engine: sa.Engine
) -> None:
    """The pooled connection a push runs on is closed by the server (a
    restart, a killed session): that push raises SQLAlchemy's error saying
    the connection was lost, the pool drops the connection, and the next
    push stores its job on a new one."""
    tag = f"push_{uuid.uuid4().hex[:8]}"
    pusher = Queue(tagged_url(database_url, database_name, tag))
    try:
        kept = pusher.push("Resize", {"n": 1})
        assert drop_worker_connections(engine, database_name, tag) >= 1

        with pytest.raises(sa.exc.DBAPIError) as caught:
            pusher.push("Resize", {"n": 2})
        assert caught.value.connection_invalidated

        again = pusher.push("Resize", {"n": 3})
    finally:
        pusher.close()
    stored = {row["id"]: payload_of(row)["data"]["n"] for row in job_rows(engine)}
    assert stored == {kept: 1, again: 3}


def test_a_statement_whose_values_need_converting_is_refused_when_built(
    engine: sa.Engine,
) -> None:
    """A column type whose values SQLAlchemy converts before the driver
    sees them (JSON here) cannot run on the driver directly: refused when
    the statement is built, not stored as something else."""
    table = sa.Table("documents", sa.MetaData(), sa.Column("body", sa.JSON))
    statement = sa.insert(table).values(body=sa.bindparam("body_0", type_=sa.JSON))

    with pytest.raises(TypeError, match="body_0 needs a bind processor"):
        DriverStatement.compile(statement, engine.dialect, ["body_0"])

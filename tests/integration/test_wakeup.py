"""An idle worker's wake-up on PostgreSQL (``LISTEN``/``NOTIFY``): a push
ends its wait, and a listening connection that the server ends never takes
the worker down with it."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from conveyor.commands import open_store
from conveyor.config import load_settings
from conveyor.drivers.database import DatabaseStore
from conveyor.worker.wakeup import Wakeup

pytestmark = pytest.mark.databases("postgresql")


@pytest.fixture
def store(database_url: str) -> DatabaseStore:
    store = open_store(load_settings(database_url=database_url))
    store.ensure_tables()
    return store


def notify(store: DatabaseStore) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.select(sa.func.pg_notify(store.channel, "")))


def end_backend(store: DatabaseStore, pid: int) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.select(sa.func.pg_terminate_backend(pid)))


def test_a_push_ends_the_wait_at_once(store: DatabaseStore) -> None:
    wakeup = Wakeup(store)
    wakeup.start()
    notify(store)

    assert wakeup.wait(10) is True
    assert wakeup.wait(0.05) is False
    wakeup.close()


def test_a_connection_ended_after_a_notification_is_given_up_quietly(
    store: DatabaseStore,
) -> None:
    """A notification already received, then the server ends the listening
    connection (as ``pg_terminate_backend`` or a restart does): the wait
    reports the push, and the broken connection is dropped instead of
    raising into the worker."""
    wakeup = Wakeup(store)
    wakeup.start()
    assert wakeup._connection is not None
    notify(store)
    end_backend(store, wakeup._connection.info.backend_pid)
    # Let the server's goodbye reach the socket behind the notification.
    time.sleep(0.5)

    wakeup.wait(10)

    assert wakeup._connection is None
    assert wakeup.wait(0.05) is False

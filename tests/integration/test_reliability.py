"""The guarantees of the reliability issue that hold inside one process:
leases and presumed-dead workers, poison jobs, contention retried rather
than failed, servers without SKIP LOCKED, clock skew, configuration refused
at start, and hostile input."""

from __future__ import annotations

import ast
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor import Queue
from conveyor.commands import open_store
from conveyor.config import QueueSettings, load_settings
from conveyor.db import create_engine, family_of
from conveyor.drivers.base import NewJob
from conveyor.drivers.contention import is_contention, retry_contention
from conveyor.drivers.database import DatabaseStore, supports_skip_locked
from conveyor.drivers.tables import queue_tables
from conveyor.exceptions import ConfigError
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions
from conveyor.worker.presence import Presence
from helpers import (
    Spawn,
    add_worker,
    count,
    create_tables,
    recorded,
    rows,
    run_cli,
    runs,
    wait_for_workers,
    wait_until,
    work,
    write_jobs,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "conveyor"


@pytest.fixture
def store(database_url: str) -> Iterator[DatabaseStore]:
    queue = Queue(database_url)
    queue.store.ensure_tables()
    yield queue.store
    queue.close()


def set_column(store: DatabaseStore, job_id: int, **values: object) -> None:
    jobs = store.tables.jobs
    with store.engine.begin() as connection:
        connection.execute(sa.update(jobs).where(jobs.c.id == job_id).values(values))


def configure(root: Path, **queue: object) -> None:
    lines = [f"{key} = {json.dumps(value)}" for key, value in queue.items()]
    (root / "conveyor.toml").write_text("[queue]\n" + "\n".join(lines) + "\n")


# -- leases and presumed-dead workers ----------------------------------------


def test_a_silent_workers_jobs_are_released_at_once_and_its_late_outcome_refused(
    store: DatabaseStore, database_url: str
) -> None:
    """A worker silent for longer than the limit is presumed dead: its job is
    released without waiting out ``retry_after`` (90 s here), with one crash
    counted since its row names it as running, and its row is gone. When it
    turns out to be alive after all, its token no longer holds: it can
    neither delete, release nor fail the job the next worker holds."""
    now = store.now()
    [job_id] = Queue(database_url).bulk("Record", [{"n": 1}])
    add_worker(store, "silent", heartbeat_at=now - 100, current_job=job_id)
    add_worker(store, "alive", heartbeat_at=now)
    lost = store.reserve("default", "silent")
    assert lost is not None and lost.id == job_id

    [dead] = store.release_dead_workers(30)

    assert (dead.host, dead.pid, dead.released) == ("elsewhere", 4242, 1)
    assert [w["id"] for w in rows(store.engine, "job_workers")] == ["alive"]
    again = store.reserve("default", "alive")
    assert again is not None
    assert (again.id, again.attempts, again.crashes) == (job_id, 2, 1)
    assert again.suspect
    assert store.delete(lost) is False
    assert store.release(lost, 0) is False
    assert store.fail(lost, "late", "") is False
    assert rows(store.engine, "failed_jobs") == []
    assert store.delete(again) is True


def test_a_worker_that_beats_keeps_its_jobs(store: DatabaseStore) -> None:
    add_worker(store, "alive", heartbeat_at=store.now() - 10)
    Queue(str(store.engine.url)).push("Record", {})
    held = store.reserve("default", "alive")
    assert held is not None

    assert store.release_dead_workers(30) == []
    assert store.reserve("default", "other") is None
    assert store.delete(held) is True


def test_an_expired_lease_counts_a_crash_and_voids_the_old_token(
    store: DatabaseStore, database_url: str
) -> None:
    """The job a worker's row names as running counts its attempt and a
    crash when its lease runs out, and the old token no longer holds."""
    job_id = Queue(database_url).push("Record", {})
    add_worker(store, "a", heartbeat_at=store.now(), current_job=job_id)
    first = store.reserve("default", "a")
    assert first is not None
    set_column(store, job_id, reserved_at=store.now() - store.retry_after - 1)

    second = store.reserve("default", "b")

    assert second is not None
    assert (second.id, second.attempts, second.crashes) == (job_id, 2, 1)
    assert store.delete(first) is False
    assert store.delete(second) is True


def test_an_expired_lease_of_a_worker_without_a_row_is_suspect_not_charged(
    store: DatabaseStore, database_url: str
) -> None:
    """With the holder's row gone nothing says the job ran: it comes back
    with its attempt taken back and no crash, marked to run alone."""
    job_id = Queue(database_url).push("Record", {})
    first = store.reserve("default", "gone")
    assert first is not None
    set_column(store, job_id, reserved_at=store.now() - store.retry_after - 1)

    second = store.reserve("default", "b")

    assert second is not None
    assert (second.id, second.attempts, second.crashes) == (job_id, 1, 0)
    assert second.suspect
    assert store.delete(first) is False


def test_registering_again_after_a_lost_commit_is_not_an_error(
    store: DatabaseStore,
) -> None:
    """A worker's registration whose commit landed while its connection
    dropped is run again on a new connection: that second insert of the same
    row is the worker's own, so it passes, and the worker is listed once.
    (On MariaDB this ended a worker with a duplicate key before.)"""
    presence = Presence(store, ["default"])

    presence.register()
    presence.register()

    [row] = rows(store.engine, "job_workers")
    assert row["id"] == presence.id


def test_after_a_lost_commit_the_store_tells_our_outcome_from_another_workers(
    store: DatabaseStore, database_url: str
) -> None:
    """When a connection drops during the commit of a delete, release or
    fail, the retry finds the row changed; ``was_deleted``, ``was_released``
    and ``was_failed`` read whether our commit landed, and say no when
    another worker holds the job instead."""
    queue = Queue(database_url)
    done_id, released_id, failed_id, taken_id = queue.bulk("Record", [1, 2, 3, 4])
    done, released, failed, taken = (store.reserve("default", "a") for _ in range(4))
    assert [job.id for job in (done, released, failed, taken) if job] == [
        done_id,
        released_id,
        failed_id,
        taken_id,
    ]
    assert done and released and failed and taken

    assert store.delete(done) and store.release(released, 60)
    assert store.fail(failed, "boom", "0f6f1b8e-5f8a-4e1c-9d3e-2a7c1b9e4d10")
    set_column(store, taken_id, reserved_at=store.now() - store.retry_after - 1)
    assert store.reserve("default", "b") is not None

    assert store.was_deleted(done) is True
    assert store.was_released(released) is True
    assert store.was_failed(failed, "0f6f1b8e-5f8a-4e1c-9d3e-2a7c1b9e4d10") is True
    assert store.was_deleted(taken) is False
    assert store.was_released(taken) is False
    assert store.was_failed(taken, "") is False
    assert store.was_failed(done, "no-such-uuid") is False


# -- poison jobs ---------------------------------------------------------------

POISON_JOBS = """
import os
import signal


class Exits(Job):
    def handle(self, data):
        record(self)
        os._exit(3)


class Segfaults(Job):
    def handle(self, data):
        record(self)
        os.kill(os.getpid(), signal.SIGSEGV)
"""


def test_a_job_that_kills_its_process_is_failed_after_max_crashes(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """With no limit on tries, ``os._exit(3)`` would come back forever;
    ``max_crashes = 2`` fails it after its second death, with the exit code."""
    configure(tmp_path, max_crashes=2)
    write_jobs(tmp_path, "poison", POISON_JOBS)
    Queue(database_url).push("Exits", {})

    result = work(tmp_path, database_url, "--tries=0")

    assert result.exit_code == 0, result.output
    assert [run["attempt"] for run in recorded(tmp_path)] == [1, 2]
    [failed] = rows(engine, "failed_jobs")
    assert "PoisonJob: the job's process exited with code 3" in failed["exception"]
    assert "2 time(s)" in failed["exception"]
    assert rows(engine, "jobs") == []


def test_a_signal_that_kills_the_job_is_named_in_failed_jobs(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    configure(tmp_path, max_crashes=1)
    write_jobs(tmp_path, "poison", POISON_JOBS)
    Queue(database_url).push("Segfaults", {})

    result = work(tmp_path, database_url, "--tries=5")

    assert result.exit_code == 0, result.output
    assert len(recorded(tmp_path)) == 1
    [failed] = rows(engine, "failed_jobs")
    assert "killed by SIGSEGV" in failed["exception"]
    assert "PoisonJob" in failed["exception"]


def test_without_a_crash_limit_crashes_spend_tries_like_errors(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    configure(tmp_path, max_crashes=0)
    write_jobs(tmp_path, "poison", POISON_JOBS)
    Queue(database_url).push("Exits", {})

    work(tmp_path, database_url, "--tries=3")

    assert [run["attempt"] for run in recorded(tmp_path)] == [1, 2, 3]
    [failed] = rows(engine, "failed_jobs")
    assert "exited with code 3" in failed["exception"]
    assert "PoisonJob" not in failed["exception"]


def test_a_job_whose_worker_died_too_often_is_failed_without_running(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """Deaths seen by others (an expired lease, a silent worker) count too:
    a job that took its whole worker down three times is not run again."""
    write_jobs(tmp_path, "standard")
    queue = Queue(database_url)
    job_id = queue.push("Record", {})
    set_column(queue.store, job_id, crashes=3)

    result = work(tmp_path, database_url, "--tries=0")

    assert result.exit_code == 0, result.output
    assert recorded(tmp_path) == []
    [failed] = rows(engine, "failed_jobs")
    assert "its worker died 3 time(s)" in failed["exception"]


# -- contention ----------------------------------------------------------------


def hold_lock(url: str, seconds: float, ready: threading.Event) -> None:
    """Hold a lock on the jobs table that blocks inserts and updates, for
    ``seconds``."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                {
                    "sqlite": "UPDATE jobs SET attempts = attempts",
                    "postgresql": "LOCK TABLE jobs IN EXCLUSIVE MODE",
                    # Next-key locks up to the end of the index block inserts.
                    "mysql": "SELECT id FROM jobs FOR UPDATE",
                }[family_of(engine)]
            )
            ready.set()
            time.sleep(seconds)
    finally:
        engine.dispose()


def impatient_store(url: str) -> DatabaseStore:
    """A store whose connections give up a lock wait after ~0.2 s, so that
    contention surfaces as the server's own error."""
    engine = create_engine(url, busy_timeout=0.2)
    family = family_of(engine)

    @sa.event.listens_for(engine, "connect")
    def impatient(dbapi_connection: object, _record: object) -> None:
        if family == "sqlite":
            return
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        if family == "postgresql":
            cursor.execute("SET lock_timeout = '200ms'")
        else:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
        cursor.close()

    return DatabaseStore(engine, queue_tables(QueueSettings()))


def test_a_lock_wait_that_times_out_is_recognised_as_contention(
    store: DatabaseStore, database_url: str
) -> None:
    """The real error each server raises when a lock is held too long."""
    Queue(database_url).push("Record", {})
    ready = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(database_url, 2.5, ready))
    holder.start()
    impatient = impatient_store(database_url)
    try:
        ready.wait(10)
        with pytest.raises(sa.exc.DBAPIError) as caught:
            impatient._changes_one(
                sa.update(store.tables.jobs).values(
                    attempts=store.tables.jobs.c.attempts
                )
            )
    finally:
        holder.join()
        impatient.engine.dispose()
    assert is_contention(caught.value), caught.value


def test_push_and_claim_wait_out_a_lock_instead_of_failing(
    store: DatabaseStore, database_url: str
) -> None:
    """A transaction that keeps the jobs table locked for longer than one
    lock wait: the push and the claim that run into it are retried inside
    the store and succeed once it ends; the job's attempt is counted once."""
    Queue(database_url).push("Record", {"first": True})
    impatient = impatient_store(database_url)
    impatient.ensure_tables()
    ready = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(database_url, 1.5, ready))
    holder.start()
    try:
        ready.wait(10)
        [pushed] = impatient.push([NewJob("default", "{}", impatient.now())])
        claimed = impatient.reserve("default", "w")
    finally:
        holder.join()
        impatient.engine.dispose()
    assert claimed is not None and claimed.attempts == 1
    assert pushed in [row["id"] for row in rows(store.engine, "jobs")]


def test_retry_contention_gives_other_errors_back_at_once(database_url: str) -> None:
    engine = create_engine(database_url)
    calls = []

    def broken() -> None:
        calls.append(1)
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT * FROM no_such_table")

    with pytest.raises(sa.exc.DBAPIError) as caught:
        retry_contention(broken, "test")
    engine.dispose()
    assert not is_contention(caught.value)
    assert calls == [1]


@pytest.mark.databases("sqlite")
def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(store: DatabaseStore) -> None:
    with store.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        busy_ms = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert mode == "wal"
    assert busy_ms >= 5000


@pytest.mark.slow
def test_a_web_process_pushes_one_by_one_while_four_workers_drain(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """300 single pushes, each its own transaction, from this process while
    four workers polling without pause claim and delete: no push fails
    (on SQLite each waits its turn for the write lock, within the busy
    timeout), and every job runs once, on its first attempt.

    Each worker claims one job at a time: the most claims to contend with
    the pushes, and no worker can take the whole burst in a few claims
    (300 pushes take under 0.1 s on SQLite)."""
    create_tables(database_url)
    workers = [spawn("--sleep=0", "--prefetch=1") for _ in range(4)]
    wait_for_workers(engine, workers)
    queue = Queue(database_url)
    try:
        ids = [queue.push("Record", {"n": n}) for n in range(300)]
    finally:
        queue.close()

    wait_until(lambda: len(runs(app, "run")) >= 300, 60, "every job ran")
    time.sleep(0.3)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    codes = [worker.wait(timeout=15) for worker in workers]

    assert codes == [0] * 4, [worker.log for worker in workers]
    done = runs(app, "run")
    assert sorted(r["id"] for r in done) == sorted(ids)
    assert {r["attempt"] for r in done} == {1}
    assert len({r["pid"] for r in done}) > 1, "one worker took every job"
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0


# -- servers without SKIP LOCKED ----------------------------------------------


@pytest.mark.parametrize(
    ("version", "mariadb", "expected"),
    [
        ((10, 5, 22), True, False),
        ((10, 6, 0), True, True),
        ((10, 11, 19), True, True),
        ((5, 7, 44), False, False),
        ((8, 0, 0), False, False),
        ((8, 0, 1), False, True),
        ((8, 4, 3), False, True),
    ],
)
def test_skip_locked_is_known_by_server_version(
    version: tuple[int, ...], mariadb: bool, expected: bool
) -> None:
    assert supports_skip_locked("mysql", version, is_mariadb=mariadb) is expected


@pytest.mark.databases("mysql")
def test_claims_without_skip_locked_still_hand_each_job_to_one_worker(
    database_url: str,
) -> None:
    """The fallback a MySQL 5.7 or MariaDB 10.5 server gets, run for real:
    four threads claiming with plain ``FOR UPDATE`` drain 200 jobs, each
    job claimed exactly once."""
    Queue(database_url).bulk("Record", [{"n": n} for n in range(200)])
    claimed: list[int] = []

    def drain() -> None:
        store = open_store(load_settings(database_url=database_url))
        store._skip_locked = False
        while (job := store.reserve("default", "w")) is not None:
            claimed.append(job.id)
            assert store.delete(job)
        store.engine.dispose()

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 200 and len(set(claimed)) == 200


@pytest.mark.parametrize("skip_locked", [True, False])
def test_a_worker_says_at_start_when_claims_fall_back_to_plain_locks(
    tmp_path: Path,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    skip_locked: bool,
) -> None:
    """Told the server has no SKIP LOCKED (as MySQL 5.7 or MariaDB 10.5
    would be), the worker warns once at start; on the servers tested here,
    which have it, it says nothing."""
    write_jobs(tmp_path, "standard")
    settings = load_settings(cwd=tmp_path, database_url=database_url)
    store = open_store(settings)
    if not skip_locked:
        store._skip_locked = False
    worker = Worker(settings, WorkerOptions(stop_when_empty=True, sleep=0), store)

    with caplog.at_level(logging.WARNING, logger="conveyor"):
        worker.run()
    store.engine.dispose()

    messages = [record.getMessage() for record in caplog.records]
    warnings = [message for message in messages if "SKIP LOCKED" in message]
    if skip_locked:
        assert warnings == []
    else:
        [warning] = warnings
        assert "fall back to plain row locks" in warning


# -- clocks --------------------------------------------------------------------


@pytest.mark.databases("postgresql", "mysql")  # SQLite has no clock of its own
@pytest.mark.parametrize("offset", [0.0, 60.0, -60.0])
def test_a_worker_warns_at_start_when_its_clock_is_off_the_servers(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture, offset: float
) -> None:
    write_jobs(tmp_path, "standard")
    settings = load_settings(cwd=tmp_path, database_url=database_url)
    store = open_store(settings)
    store.clock = lambda: time.time() + offset
    worker = Worker(settings, WorkerOptions(stop_when_empty=True, sleep=0), store)

    with caplog.at_level(logging.WARNING, logger="conveyor"):
        worker.run()

    warnings = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    if offset:
        [warning] = warnings
        assert f"{offset:+.0f}" in warning.split("clock is ")[1][:4]
        assert "max_clock_skew = 5 s" in warning
    else:
        assert warnings == []


# -- configuration refused at start -------------------------------------------


@pytest.mark.parametrize("timeout", [30, 0])
def test_a_job_class_timeout_not_below_retry_after_is_refused_at_start(
    tmp_path: Path, database_url: str, engine: sa.Engine, timeout: int
) -> None:
    """A class ``timeout`` of ``retry_after`` or more, or 0 (none at all),
    would let its job outlive its lease: the worker refuses to start."""
    configure(tmp_path, retry_after=30)
    write_jobs(
        tmp_path,
        "slow",
        f"""
        class Report(Job):
            timeout = {timeout}

            def handle(self, data):
                record(self)
        """,
    )
    Queue(database_url).push("Report", {})

    result = work(tmp_path, database_url, "--timeout=10")

    assert result.exit_code != 0
    [line] = result.stderr.strip().splitlines()
    assert f"job Report has timeout = {timeout}," in line
    assert "retry_after (30 s" in line
    [job] = rows(engine, "jobs")
    assert job["attempts"] == 0


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("heartbeat_timeout = 2", "'heartbeat_timeout' must be 5 seconds or more"),
        ("max_crashes = -1", "'max_crashes' must be a whole number"),
        ("max_crashes = 1.5", "'max_crashes' must be a whole number"),
        ("max_clock_skew = 'x'", "'max_clock_skew' must be a number of seconds"),
    ],
)
def test_impossible_reliability_settings_are_refused(
    tmp_path: Path, setting: str, message: str
) -> None:
    (tmp_path / "conveyor.toml").write_text(f"[queue]\n{setting}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(cwd=tmp_path)


@pytest.mark.parametrize("command", [["queue", "work"], ["queue", "push", "Record"]])
def test_a_sqlite_file_that_cannot_be_written_is_refused_by_name(
    tmp_path: Path, command: list[str]
) -> None:
    result = run_cli(
        command, cwd=tmp_path, database_url="sqlite:////proc/no-such/conveyor.db"
    )
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "SQLite database /proc/no-such/conveyor.db cannot be written" in line


# -- hostile input -------------------------------------------------------------

HOSTILE = "q'; DROP TABLE jobs; --"


def test_hostile_queue_names_and_data_reach_sql_only_as_values(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    write_jobs(tmp_path, "standard")
    data = {
        "sql": "x'); DELETE FROM jobs; SELECT ('",
        "quote": '"\\`',
        "nul": "a\x00b",
        "percent": "%s %(id)s ?",
    }
    Queue(database_url).push_on(HOSTILE, "Record", data)
    Queue(database_url).push("Record", {"keep": True})

    result = work(tmp_path, database_url, f"--queue={HOSTILE}")

    assert result.exit_code == 0, result.output
    [run] = recorded(tmp_path)
    assert (run["queue"], run["data"]) == (HOSTILE, data)
    [left] = rows(engine, "jobs")
    assert left["queue"] == "default"


def test_payloads_naming_code_outside_the_job_folders_never_import_it(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    """A payload is only ever a class name looked up in the job folders: a
    module path, a builtin or a module beside ``jobs/`` fails the job
    without anything being imported."""
    write_jobs(tmp_path, "standard")
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass Boom:\n"
        "    def handle(self, data): pass\n"
    )
    names = ["os.system", "subprocess:Popen", "evil.Boom", "evil", "__import__"]
    queue = Queue(database_url)
    for name in names:
        payload = json.dumps({"job": name, "data": "id", "uuid": name})
        queue.store.push([NewJob("default", payload, queue.store.now())])

    work(tmp_path, database_url)

    assert not marker.exists()
    failed = rows(engine, "failed_jobs")
    assert len(failed) == len(names)
    assert all("no job class named" in row["exception"] for row in failed)


def test_nothing_in_conveyor_imports_a_serializer_that_runs_code() -> None:
    """Payloads and the worker's pipes are JSON: no module of Conveyor
    imports pickle or its relatives."""
    unsafe = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve"}
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [
                f"{path.name}: {name}" for name in names if name.split(".")[0] in unsafe
            ]
    assert found == []


def test_failed_jobs_keep_the_traceback_but_not_the_jobs_local_values(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    write_jobs(
        tmp_path,
        "secretive",
        """
        class Charge(Job):
            def handle(self, data):
                api_key = "sk_live_" + "hunter2"
                raise RuntimeError("card declined")
        """,
    )
    Queue(database_url).push("Charge", {"card": "tok_visa"})

    work(tmp_path, database_url)

    [failed] = rows(engine, "failed_jobs")
    assert "RuntimeError: card declined" in failed["exception"]
    assert 'raise RuntimeError("card declined")' in failed["exception"]
    assert "hunter2" not in failed["exception"]
    assert json.loads(failed["payload"])["data"] == {"card": "tok_visa"}

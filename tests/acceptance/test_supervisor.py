"""``conveyor queue work --processes N`` as real processes: N workers under
one supervisor draining a backlog, stopped warm and cold by real signals to
the supervisor alone, replaced after ``queue restart``, ``--max-jobs`` and a
SIGKILL, started again with a back-off while they keep dying, and bad
``--processes`` values refused."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import (
    Spawn,
    WorkerProcess,
    count,
    create_tables,
    gone,
    push,
    run_cli,
    run_process,
    runs,
    table,
    wait_until,
)


def worker_pids(engine: sa.Engine) -> set[int]:
    """The pids of the registered workers."""
    return {row["pid"] for row in table(engine, "job_workers")}


def wait_for_pids(
    engine: sa.Engine, supervisor: WorkerProcess, how_many: int, timeout: float = 30
) -> set[int]:
    """Wait until ``how_many`` workers have registered; their pids. Fails at
    once if the supervisor exits."""

    def registered() -> set[int]:
        code = supervisor.process.poll()
        assert code is None, f"supervisor exited with {code}:\n{supervisor.log}"
        pids = worker_pids(engine)
        return pids if len(pids) == how_many else set()

    found: set[int] = wait_until(registered, timeout, f"{how_many} workers", 0.05)
    return found


def started_pids(log: str) -> list[int]:
    """The pids of the supervisor's ``worker N started: pid P`` lines."""
    return [int(pid) for pid in re.findall(r"worker \d+ started: pid (\d+)", log)]


def test_workers_drain_a_backlog_running_each_job_once(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    create_tables(database_url)
    ids = push(database_url, "Record", *range(300))

    supervisor = spawn("--processes=3", "--stop-when-empty", "--sleep=0")

    assert supervisor.wait(timeout=120) == 0, supervisor.log
    ran = [record["id"] for record in runs(app, "run")]
    assert sorted(ran) == sorted(ids)
    assert count(engine, "jobs") == 0
    assert count(engine, "job_workers") == 0
    assert len(set(started_pids(supervisor.log))) == 3
    assert "Traceback" not in supervisor.log


@pytest.mark.parametrize("to_group", [False, True], ids=["alone", "group"])
def test_a_stop_signal_lets_every_worker_finish_its_job(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn, to_group: bool
) -> None:
    """SIGTERM to the supervisor alone (as systemd's KillMode=mixed sends
    it), or SIGINT to its whole group (a terminal's Ctrl-C): each worker
    finishes the job it runs, takes no other, and exits; then the supervisor
    exits 0."""
    create_tables(database_url)
    go = app / "go"
    gated = push(database_url, "Gate", *[{"go": str(go)}] * 3)
    waiting = push(database_url, "Record", *range(5))
    supervisor = spawn("--processes=3", "--sleep=0.1")
    wait_until(lambda: len(runs(app, "start")) == 3, 30, "three jobs started")

    if to_group:
        supervisor.signal(signal.SIGINT)
    else:
        os.kill(supervisor.pid, signal.SIGTERM)
    wait_until(lambda: "warm stop of every worker" in supervisor.log, 10, "a stop")
    go.touch()

    assert supervisor.wait(timeout=30) == 0, supervisor.log
    assert sorted(record["id"] for record in runs(app, "end")) == sorted(gated)
    left = table(engine, "jobs")
    assert [(row["id"], row["attempts"], row["reserved_at"]) for row in left] == [
        (job_id, 0, None) for job_id in waiting
    ]
    assert count(engine, "job_workers") == 0
    assert all(gone(pid) for pid in started_pids(supervisor.log))


def test_a_second_signal_puts_the_running_jobs_back_at_once(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    create_tables(database_url)
    gated = push(database_url, "Gate", *[{"go": str(app / "never")}] * 2)
    supervisor = spawn("--processes=2", "--sleep=0.1")
    wait_until(lambda: len(runs(app, "start")) == 2, 30, "both jobs started")

    os.kill(supervisor.pid, signal.SIGTERM)
    wait_until(lambda: "warm stop of every worker" in supervisor.log, 10, "a stop")
    os.kill(supervisor.pid, signal.SIGINT)

    assert supervisor.wait(timeout=20) == 0, supervisor.log
    assert "cold stop of every worker" in supervisor.log
    assert runs(app, "end") == []
    left = table(engine, "jobs")
    assert [(row["id"], row["reserved_at"]) for row in left] == [
        (job_id, None) for job_id in gated
    ]


def test_a_killed_worker_is_replaced_and_its_job_still_runs(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """SIGKILL to one worker: the supervisor logs it and starts another;
    the job it held comes back once its heartbeat stops, and the whole
    backlog is run."""
    (app / "conveyor.toml").write_text(
        "[queue]\nretry_after = 60\nheartbeat_timeout = 5\n"
    )
    create_tables(database_url)
    [held] = push(database_url, "Sleep", {"seconds": [60, 0]})
    backlog = push(database_url, "Record", *range(50))
    supervisor = spawn("--processes=2", "--sleep=0.1", "--timeout=30", "--tries=3")
    wait_for_pids(engine, supervisor, 2)
    wait_until(lambda: runs(app, "start"), 30, "the long job started")
    [holder] = wait_until(
        lambda: [
            r["pid"] for r in table(engine, "job_workers") if r["current_job"] == held
        ],
        10,
        "the worker running the long job",
    )

    os.kill(holder, signal.SIGKILL)

    wait_until(lambda: "killed by SIGKILL" in supervisor.log, 10, "the death logged")
    wait_until(
        lambda: len(started_pids(supervisor.log)) == 3, 15, "a third worker started"
    )
    wait_until(lambda: count(engine, "jobs") == 0, 60, "every job run")
    assert sorted(r["id"] for r in runs(app, "run")) == sorted(backlog)
    assert [r["id"] for r in runs(app, "end")] == [held]
    os.kill(supervisor.pid, signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0, supervisor.log


def test_queue_restart_brings_fresh_workers_that_queue_workers_lists(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    create_tables(database_url)
    supervisor = spawn("--processes=2", "--sleep=0.2")
    before = wait_for_pids(engine, supervisor, 2)

    # In processes of their own: SQLite connections of one process closing
    # would let the test's own connections read an old snapshot.
    asked = run_process(["queue", "restart"], cwd=app, database_url=database_url)

    assert "asked 2 worker(s)" in asked.stdout

    def fresh() -> set[int]:
        pids = worker_pids(engine)
        return pids if len(pids - before) == 2 else set()

    after = wait_until(fresh, 30, "two fresh workers")
    assert supervisor.log.count("stopped to be replaced") == 2
    listed = run_process(["queue", "workers"], cwd=app, database_url=database_url)
    assert all(str(pid) in listed.stdout for pid in after), listed.stdout
    push(database_url, "Record", "after the restart")
    wait_until(lambda: runs(app, "run"), 15, "a fresh worker ran a job")
    os.kill(supervisor.pid, signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0, supervisor.log


def test_workers_stopped_by_max_jobs_are_replaced_until_the_queue_is_empty(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    create_tables(database_url)
    ids = push(database_url, "Record", *range(40))

    supervisor = spawn(
        "--processes=2", "--max-jobs=10", "--stop-when-empty", "--sleep=0"
    )

    assert supervisor.wait(timeout=120) == 0, supervisor.log
    assert sorted(r["id"] for r in runs(app, "run")) == sorted(ids)
    assert len(started_pids(supervisor.log)) >= 4
    assert "stopped to be replaced" in supervisor.log


@pytest.mark.databases("sqlite")
def test_a_worker_that_keeps_dying_is_started_again_ever_more_slowly(
    app: Path, database_url: str, spawn: Spawn
) -> None:
    """A job module that cannot be imported makes every worker exit with an
    error: the supervisor waits 1 s, then 2 s, ... between starts, and a
    SIGTERM during a wait still stops it at once with exit code 0."""
    (app / "jobs" / "broken.py").write_text("import no_such_module\n")
    supervisor = spawn("--processes=2", "--sleep=0.1")

    def delays() -> list[str]:
        pattern = r"worker 1 \(pid \d+\) died: exit code 1 .* in (\d+) s"
        return re.findall(pattern, supervisor.log)

    wait_until(lambda: len(delays()) >= 2, 60, "worker 1 died twice")
    assert delays()[:2] == ["1", "2"], supervisor.log

    os.kill(supervisor.pid, signal.SIGTERM)
    assert supervisor.wait(timeout=20) == 0, supervisor.log


@pytest.mark.databases("postgresql", "mysql")
def test_workers_the_database_refuses_stop_the_supervisor_instead_of_restarting(
    app: Path, database_url: str, spawn: Spawn
) -> None:
    """A database that does not exist refuses every worker alike: the
    supervisor says so once per worker, starts none again, and exits 1
    (a process manager then shows it failed, rather than a supervisor
    restarting its workers every 30 s for ever)."""
    bad = sa.make_url(database_url).set(database="conveyor_no_such_db")

    supervisor = spawn(
        "--processes=2", "--sleep=0.1", url=bad.render_as_string(hide_password=False)
    )

    assert supervisor.wait(timeout=30) == 1, supervisor.log
    assert "the database refused this worker" in supervisor.log
    assert "was refused by the database" in supervisor.log
    assert "died" not in supervisor.log
    assert len(started_pids(supervisor.log)) == 2, supervisor.log
    assert "Traceback" not in supervisor.log


@pytest.mark.databases("sqlite")
@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_a_bad_processes_value_is_refused(
    app: Path, database_url: str, value: str
) -> None:
    result = run_cli(
        ["queue", "work", f"--processes={value}"], cwd=app, database_url=database_url
    )

    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("Error: Invalid value for '--processes'")
    assert "Traceback" not in result.output


@pytest.mark.databases("sqlite")
def test_a_timeout_the_workers_would_refuse_stops_the_supervisor_first(
    app: Path, database_url: str
) -> None:
    result = run_cli(
        ["queue", "work", "--processes=2", "--timeout=90"],
        cwd=app,
        database_url=database_url,
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("error: --timeout=90 must be more than 0")
    assert "started" not in result.output

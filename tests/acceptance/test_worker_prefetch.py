"""A worker claims jobs ahead (``--prefetch``), as an operator runs it: the
jobs it has not started go back at once when it stops; when it is killed,
only the job it was running counts an attempt and a crash, and a job that
kills every worker still ends failed; and an idle worker on PostgreSQL wakes
when a job is pushed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from conveyor import Queue
from helpers import Spawn, push, run_cli, runs, table, wait_until, write_job


def bring_back_dead_workers(database_url: str) -> int:
    """What a live worker does once a dead one's heartbeat is old enough,
    without waiting for it; how many jobs came back."""
    queue = Queue(database_url)
    try:
        return sum(dead.released for dead in queue.store.release_dead_workers(-1))
    finally:
        queue.close()


def warm_up(database_url: str) -> list[int]:
    """Seven fast jobs, pushed first: a fresh worker claims one job, then
    two, then four (its claims grow while jobs run fast), so its next claim
    takes up to eight of the jobs pushed after these."""
    return push(database_url, "Record", *(f"warm-up {n}" for n in range(7)))


def test_jobs_claimed_ahead_go_back_at_once_when_the_worker_stops(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """SIGTERM while the first of six claimed jobs runs: it finishes, the
    five others were never started and are back in the queue, not reserved
    and with no attempt counted (put back when it stopped, or already
    when the running job had run a moment)."""
    warm = warm_up(database_url)
    [sleep_id] = push(database_url, "Sleep", {"seconds": 2})
    waiting = push(database_url, "Record", *range(5))
    worker = spawn("--sleep=0.1", "--prefetch=10")

    wait_until(lambda: runs(app, "start"), 15, "the job started")
    worker.signal(signal.SIGTERM)
    code = worker.wait(timeout=15)

    assert code == 0, worker.log
    assert [(r["id"], r["event"]) for r in runs(app) if r["id"] not in warm] == [
        (sleep_id, "start"),
        (sleep_id, "end"),
    ]
    left = table(engine, "jobs")
    assert [row["id"] for row in left] == waiting
    assert all(row["reserved_at"] is None for row in left)
    assert all(row["reserved_by"] is None for row in left)
    assert all(row["attempts"] == 0 for row in left)


def test_with_prefetch_1_only_the_running_job_is_claimed(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    push(database_url, "Sleep", {"seconds": 1})
    push(database_url, "Record", *range(3))
    worker = spawn("--sleep=0.1", "--prefetch=1", "--stop-when-empty")

    wait_until(lambda: runs(app, "start"), 15, "the job started")
    held = [row for row in table(engine, "jobs") if row["reserved_at"] is not None]

    assert worker.wait(timeout=30) == 0, worker.log
    assert len(held) == 1
    assert len(runs(app, "run")) == 3
    assert table(engine, "jobs") == []


@pytest.mark.databases("postgresql")
def test_a_push_wakes_an_idle_worker_on_postgresql(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """An idle worker with ``--sleep=120`` runs a job pushed while it waits
    long before it would poll again: the push's NOTIFY woke it."""
    worker = spawn("--sleep=120")
    wait_until(lambda: "worker started" in worker.log, 15, "the worker started")
    time.sleep(1)  # idle now, in its first long wait

    [job_id] = push(database_url, "Record", "wake up")

    wait_until(lambda: runs(app, "run"), 30, "the job ran")
    assert [r["id"] for r in runs(app, "run")] == [job_id]
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0, worker.log


@pytest.mark.databases("postgresql")
def test_a_retried_job_wakes_an_idle_worker_on_postgresql(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """``queue retry`` notifies as a push does: an idle worker with
    ``--sleep=120`` runs the retried job at once."""
    [job_id] = push(database_url, "Record", "again")
    queue = Queue(database_url)
    try:
        [job] = queue.store.reserve_many("default", "", 1)
        assert queue.store.fail(job, "ValueError: boom", "")
    finally:
        queue.close()
    worker = spawn("--sleep=120")
    wait_until(lambda: "worker started" in worker.log, 15, "the worker started")
    time.sleep(1)  # idle now, in its first long wait

    retried = run_cli(["queue", "retry", "all"], cwd=app, database_url=database_url)

    assert retried.exit_code == 0, retried.output
    wait_until(lambda: runs(app, "run"), 30, "the retried job ran")
    assert [r["data"] for r in runs(app, "run")] == ["again"]
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0, worker.log


def test_a_killed_worker_charges_only_the_job_it_was_running(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """A worker claimed six jobs together; the second runs long enough for
    its heartbeat to name it: by then the first (finished) is deleted and
    the four never started are back with no attempt counted. SIGKILL: the
    running one keeps its attempt, counts one crash and is marked to run
    alone next time; nothing else is charged."""
    go = app / "go"
    warm = warm_up(database_url)
    [finished_id] = push(database_url, "Record", "first")
    [gate_id] = push(database_url, "Gate", {"go": str(go)})
    unstarted = push(database_url, "Record", *range(4))
    worker = spawn("--sleep=0.1", "--prefetch=10")

    wait_until(lambda: runs(app, "start"), 15, "the gate job started")
    wait_until(
        lambda: [w["current_job"] for w in table(engine, "job_workers")] == [gate_id],
        5,
        "the worker's row names the running job",
    )
    wait_until(
        lambda: (
            [row["id"] for row in table(engine, "jobs")] == [gate_id, *unstarted]
            and [row["id"] for row in table(engine, "jobs") if row["reserved_at"]]
            == [gate_id]
        ),
        5,
        "the jobs around the running one let go",
    )
    worker.kill()

    assert [r["id"] for r in runs(app, "run")] == [*warm, finished_id]
    assert bring_back_dead_workers(database_url) == 1
    by_id = {row["id"]: row for row in table(engine, "jobs")}
    assert all(row["reserved_at"] is None for row in by_id.values())
    counts = {
        job_id: (row["attempts"], row["crashes"], row["reserved_by"])
        for job_id, row in by_id.items()
    }
    assert counts == {
        gate_id: (1, 1, "suspect"),
        **{job_id: (0, 0, None) for job_id in unstarted},
    }


def test_a_job_that_kills_every_worker_fails_after_max_crashes_with_prefetch(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """A job that SIGKILLs the worker running it, among jobs claimed ahead:
    its first death names no job (it dies in milliseconds, between fast
    jobs), so every job the worker held comes back uncounted but suspect;
    suspects then run alone, named first, so each later death is charged to
    it. With ``max_crashes = 2`` it has run three times when the next
    worker fails it as a poison job, whatever ``--tries`` (none here) allows;
    every other job ran and none failed."""
    (app / "conveyor.toml").write_text("[queue]\nmax_crashes = 2\n")
    warm = warm_up(database_url)
    before = push(database_url, "Record", "a", "b")
    [killer_id] = push(database_url, "KillWorker", {})
    after = push(database_url, "Record", "c", "d", "e")

    for _ in range(6):
        worker = spawn("--sleep=0.1", "--prefetch=10", "--stop-when-empty", "--tries=0")
        code = worker.wait(timeout=60)
        if code == 0:
            break
        assert code == -9, worker.log
        bring_back_dead_workers(database_url)

    assert code == 0, "the poison job was never failed"
    assert table(engine, "jobs") == []
    [failed] = table(engine, "failed_jobs")
    assert "PoisonJob" in failed["exception"], failed["exception"]
    assert "died 2 time(s)" in failed["exception"], failed["exception"]
    starts = [r["id"] for r in runs(app, "start")]
    assert starts == [killer_id] * 3
    assert {r["id"] for r in runs(app, "run")} == {*warm, *before, *after}


#: A job that records how many jobs are reserved while it runs.
HELD_JOB = """
    import json
    import os
    from pathlib import Path

    import sqlalchemy as sa

    from conveyor import Job

    RUNS = Path(__file__).resolve().parent.parent / "runs.log"
    ENGINES = {}


    class CountHeld(Job):
        def handle(self, data):
            engine = ENGINES.get(data["url"])
            if engine is None:
                engine = ENGINES[data["url"]] = sa.create_engine(data["url"])
            with engine.connect() as connection:
                held = connection.execute(
                    sa.text("SELECT COUNT(*) FROM jobs WHERE reserved_at IS NOT NULL")
                ).scalar_one()
            line = json.dumps({"event": "held", "id": self.context.id, "held": held})
            fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\\n").encode())
            finally:
                os.close(fd)
"""


def test_a_busy_worker_claims_the_next_batch_while_one_runs(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Draining a busy queue, a worker claims its next batch while the job
    process runs the current one: jobs see up to two batches reserved, never
    more, and every job runs once."""
    write_job(app, "held", HELD_JOB)
    url = str(engine.url.render_as_string(hide_password=False))
    warm = warm_up(database_url)
    counted = push(database_url, "CountHeld", *[{"url": url}] * 200)
    worker = spawn("--sleep=0.1", "--prefetch=10", "--stop-when-empty")

    assert worker.wait(timeout=60) == 0, worker.log
    held = [r["held"] for r in runs(app, "held")]
    assert sorted(r["id"] for r in runs(app, "held")) == counted
    assert [r["id"] for r in runs(app, "run")] == warm
    assert max(held) > 10, f"never more than one batch held: {held}"
    assert max(held) <= 20, held
    assert table(engine, "jobs") == []


def test_the_next_batch_goes_back_as_soon_as_a_job_runs_slowly(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """With ``--prefetch=4`` the third claim is a full batch (claims grow 1,
    2, 4), so the next four are claimed while it runs; its last job blocks,
    and those four go back at once, uncounted, for other workers, while it
    still runs."""
    go = app / "go"
    warm = push(database_url, "Record", "w1", "w2", "w3")
    batch = push(database_url, "Record", "b1", "b2", "b3")
    [gate_id] = push(database_url, "Gate", {"go": str(go)})
    ahead = push(database_url, "Record", "a1", "a2", "a3", "a4")
    worker = spawn("--sleep=0.1", "--prefetch=4", "--stop-when-empty")

    wait_until(lambda: runs(app, "start"), 15, "the gate job started")
    assert [r["id"] for r in runs(app, "run")] == [*warm, *batch]
    wait_until(
        lambda: all(
            row["reserved_at"] is None and row["attempts"] == 0
            for row in table(engine, "jobs")
            if row["id"] in ahead
        ),
        5,
        "the batch claimed ahead went back",
    )
    by_id = {row["id"]: row for row in table(engine, "jobs")}
    assert by_id[gate_id]["reserved_at"] is not None
    go.touch()

    assert worker.wait(timeout=30) == 0, worker.log
    assert [r["id"] for r in runs(app, "run")] == [*warm, *batch, *ahead]
    assert table(engine, "jobs") == []


def test_jobs_claimed_behind_a_slow_job_go_back_and_those_done_are_deleted(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Fast jobs grow a worker's claims; the claim that takes a slow job
    takes the jobs behind it too. Once the slow job has run a moment, the
    jobs behind it go back, uncounted, for other workers, and the fast
    jobs done before it are deleted and logged, without waiting for it."""
    go = app / "go"
    warm = warm_up(database_url)
    [first] = push(database_url, "Record", "before the gate")
    [gate_id] = push(database_url, "Gate", {"go": str(go)})
    behind = push(database_url, "Record", "b1", "b2", "b3", "b4", "b5")
    worker = spawn("--sleep=0.1", "--prefetch=10", "--stop-when-empty")

    wait_until(lambda: runs(app, "start"), 15, "the gate job started")
    wait_until(
        lambda: (
            [row["id"] for row in table(engine, "jobs") if row["reserved_at"]]
            == [gate_id]
        ),
        5,
        "only the running job still held",
    )
    left = {row["id"]: row for row in table(engine, "jobs")}
    assert sorted(left) == [gate_id, *behind]
    assert all(left[job_id]["attempts"] == 0 for job_id in behind)
    wait_until(lambda: f"#{first} " in worker.log, 5, "the job before it logged")
    go.touch()

    assert worker.wait(timeout=30) == 0, worker.log
    assert [r["id"] for r in runs(app, "run")] == [*warm, first, *behind]
    assert table(engine, "jobs") == []

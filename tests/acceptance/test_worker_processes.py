"""``conveyor queue work`` as real processes: several workers draining one
queue, workers killed with SIGKILL, stopped with SIGTERM and SIGINT, asked to
restart, a job stuck in C code, a long job against ``retry_after``, and the
database dropping the worker's connections.

Every job below writes one JSON line per event to ``runs.log`` in the
application folder, with ``O_APPEND`` so that lines from several processes
never mix: that file, not the worker's log, is the record of what ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor import Queue
from conveyor.db import connect

JOBS = """
    import json
    import os
    import time
    from pathlib import Path

    from conveyor import Job

    RUNS = Path(__file__).resolve().parent.parent / "runs.log"


    def record(job, event):
        line = json.dumps(
            {
                "event": event,
                "job": type(job).__name__,
                "id": job.context.id,
                "attempt": job.context.attempt,
                "pid": os.getpid(),
                "time": time.time(),
            }
        )
        fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)


    class Record(Job):
        def handle(self, data):
            record(self, "run")


    def runs_before(job):
        if not RUNS.exists():
            return 0
        lines = RUNS.read_text().splitlines()
        return sum(
            1 for line in lines
            if json.loads(line)["id"] == job.context.id
            and json.loads(line)["event"] == "start"
        )


    class Sleep(Job):
        # data["seconds"]: a number, or one number per run of this job id (the
        # last repeats), whatever its attempt number
        def handle(self, data):
            run = runs_before(self) + 1
            record(self, "start")
            seconds = data["seconds"]
            if isinstance(seconds, list):
                seconds = seconds[min(run, len(seconds)) - 1]
            time.sleep(seconds)
            record(self, "end")


    class Until(Job):
        # Ends when the clock's fraction of a second reaches data["fraction"].
        def handle(self, data):
            time.sleep((data["fraction"] - time.time() % 1) % 1)


    class Stuck(Job):
        def handle(self, data):
            record(self, "start")
            sum(range(10**13))  # minutes in C code, deaf to signals
            record(self, "end")
"""


# -- the application folder and its records ---------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """An application folder with the jobs above in ``jobs/demo.py``."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "demo.py").write_text(textwrap.dedent(JOBS).lstrip(), encoding="utf-8")
    return tmp_path


def set_retry_after(app: Path, seconds: int) -> None:
    (app / "conveyor.toml").write_text(f"[queue]\nretry_after = {seconds}\n")


def runs(app: Path, event: str | None = None) -> list[Any]:
    """The records written so far (of ``event`` only, if given), oldest
    first; a line still being written is left out."""
    path = app / "runs.log"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    records = [json.loads(line) for line in lines]
    return [r for r in records if event is None or r["event"] == event]


def push(url: str, job: str, *items: Any) -> list[int]:
    """Push one ``job`` per item, the way an application does; the ids."""
    queue = Queue(url)
    try:
        return queue.bulk(job, list(items))
    finally:
        queue.close()


def table(engine: sa.Engine, name: str) -> list[dict[str, Any]]:
    """Every row of a queue table, by id."""
    with connect(engine, read_only=True) as connection:
        result = connection.execute(sa.text(f"SELECT * FROM {name} ORDER BY id"))
        return [dict(row) for row in result.mappings()]


def count(engine: sa.Engine, name: str) -> int:
    with connect(engine, read_only=True) as connection:
        return int(connection.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar())


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.02
) -> Any:
    """The first truthy value of ``predicate()``; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {what}")
        time.sleep(poll)


def gone(pid: int) -> bool:
    """Whether no process runs as ``pid`` (a zombie runs nothing: this
    machine's init does not always reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# -- worker processes ---------------------------------------------------------


@dataclass
class WorkerProcess:
    """One ``conveyor queue work`` process, leading its own process group
    (which its job process joins), its output in a file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the group, as a terminal's Ctrl-C or a service
        manager's stop does; the job process must ignore it."""
        os.killpg(self.pid, signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.pid} still running after {timeout:g} s; its log:\n"
                + self.log
            ) from None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()


Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def spawn(app: Path, database_url: str) -> Iterator[Spawn]:
    """Start workers in ``app``; each is killed, with its group, at the end."""
    started: list[WorkerProcess] = []

    def start(*options: str, url: str = database_url) -> WorkerProcess:
        log_path = app / f"worker-{len(started) + 1}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "queue", "work", *options]
                + ["--database", url],
                cwd=app,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(process, log_path)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


def create_tables(url: str) -> None:
    """Create the queue's tables, as the first push would."""
    queue = Queue(url)
    try:
        queue.store.ensure_tables()
    finally:
        queue.close()


def wait_for_workers(
    engine: sa.Engine, workers: list[WorkerProcess], timeout: float = 15
) -> None:
    """Wait until ``workers`` have registered: each has its job process
    running and is about to look for jobs. Fails at once if one exits."""

    def registered() -> bool:
        for worker in workers:
            code = worker.process.poll()
            assert code is None, f"worker exited with {code}:\n{worker.log}"
        with connect(engine, read_only=True) as connection:
            if not sa.inspect(connection).has_table("job_workers"):
                return False
        return count(engine, "job_workers") >= len(workers)

    wait_until(registered, timeout, f"{len(workers)} worker(s) registered", 0.05)


# -- Q02: many workers, one queue ---------------------------------------------


@pytest.mark.slow
def test_four_workers_run_each_of_2000_jobs_exactly_once(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Case Q02: four workers polling without pause drain 2,000 jobs; every
    job runs once, on its first attempt, and nothing is left behind."""
    ids = push(database_url, "Record", *range(2000))

    workers = [spawn("--sleep=0", "--stop-when-empty") for _ in range(4)]
    codes = [worker.wait(timeout=120) for worker in workers]

    assert codes == [0, 0, 0, 0], [worker.log for worker in workers]
    done = runs(app)
    assert len(done) == 2000
    assert sorted(r["id"] for r in done) == sorted(ids)
    assert {r["attempt"] for r in done} == {1}
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0


def test_workers_started_together_on_a_new_database_all_run(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Four workers started at once on a database without the queue's tables
    (a first deploy): each creates what is missing without tripping over
    the others, and all of them run."""
    workers = [spawn("--sleep=0.2") for _ in range(4)]

    wait_for_workers(engine, workers)

    assert count(engine, "jobs") == 0


# -- Q03: a worker killed with SIGKILL ----------------------------------------


@pytest.mark.slow
def test_a_job_of_a_killed_worker_runs_again_once_its_lease_runs_out(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Case Q03: SIGKILL to a worker's group mid-job takes its job process
    down too; a second worker runs the job again, as attempt 2, once
    ``retry_after`` (3 s) has passed since the reservation and not before.

    The job is reserved late in a second (a first job, ``Until``, keeps the
    worker busy until then) so that a lease counted in whole seconds, which
    could run out up to a second early, shows."""
    set_retry_after(app, 3)
    push(database_url, "Until", {"fraction": 0.7})
    [job_id] = push(database_url, "Sleep", {"seconds": [30, 0]})
    first = spawn("--timeout=2", "--tries=3", "--sleep=0.1")

    [started] = wait_until(lambda: runs(app, "start"), 15, "attempt 1 started")
    first.signal(signal.SIGKILL)
    first.wait(timeout=5)
    wait_until(lambda: gone(started["pid"]), 5, "the job process died")

    second = spawn("--timeout=2", "--tries=3", "--sleep=0.1")
    wait_until(lambda: runs(app, "end"), 15, "attempt 2 ran")
    second.signal(signal.SIGTERM)
    assert second.wait(timeout=10) == 0, second.log

    attempts = runs(app, "start")
    assert [(r["id"], r["attempt"]) for r in attempts] == [(job_id, 1), (job_id, 2)]
    waited = attempts[1]["time"] - attempts[0]["time"]
    assert waited >= 3 - 0.05, f"handed out again {waited:.2f} s after reservation"
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0


def test_a_worker_killed_alone_takes_its_job_process_down(
    app: Path, database_url: str, spawn: Spawn
) -> None:
    """SIGKILL to the worker's pid only (not its group): the job process
    dies with it (``PR_SET_PDEATHSIG``) instead of running on unsupervised."""
    push(database_url, "Sleep", {"seconds": 30})
    worker = spawn()

    [started] = wait_until(lambda: runs(app, "start"), 15, "the job started")
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(timeout=5)

    wait_until(lambda: gone(started["pid"]), 5, "the job process died")


# -- Q10: warm stop on the first SIGTERM or SIGINT ----------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_lets_the_running_job_finish(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn, signum: int
) -> None:
    """Case Q10: SIGTERM (or one Ctrl-C) while a 2 s job runs: the job
    finishes and is deleted, the next job waiting is left alone, and the
    worker exits with code 0."""
    [sleep_id] = push(database_url, "Sleep", {"seconds": 2})
    [waiting_id] = push(database_url, "Record", None)
    worker = spawn("--sleep=0.1")

    wait_until(lambda: runs(app, "start"), 15, "the job started")
    worker.signal(signum)
    code = worker.wait(timeout=10)

    assert code == 0, worker.log
    assert [(r["id"], r["event"]) for r in runs(app)] == [
        (sleep_id, "start"),
        (sleep_id, "end"),
    ]
    [left] = table(engine, "jobs")
    assert left["id"] == waiting_id
    assert left["reserved_at"] is None
    assert left["attempts"] == 0
    assert count(engine, "failed_jobs") == 0


# -- cold stop on a second SIGINT ---------------------------------------------


def test_a_second_sigint_stops_the_job_and_puts_it_back(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Two Ctrl-Cs: the worker kills the job process and exits within a
    couple of seconds; the job is available again at once, the interrupted
    attempt not counted (the shutdown stopped it, not the job), so a later
    worker with the default --tries=1 still runs it."""
    [job_id] = push(database_url, "Sleep", {"seconds": [30, 0]})
    worker = spawn("--sleep=0.1")

    [started] = wait_until(lambda: runs(app, "start"), 15, "the job started")
    worker.signal(signal.SIGINT)
    time.sleep(0.3)
    worker.signal(signal.SIGINT)
    second_signal = time.monotonic()
    code = worker.wait(timeout=10)
    stopped_in = time.monotonic() - second_signal

    assert code >= 0, f"killed by signal {-code}: {worker.log}"
    assert stopped_in < 3, worker.log
    assert gone(started["pid"])
    assert runs(app, "end") == []
    [row] = table(engine, "jobs")
    assert row["reserved_at"] is None
    assert row["reservation"] is None
    assert row["attempts"] == 0
    assert row["available_at"] <= time.time()

    later = spawn("--sleep=0.1", "--stop-when-empty")
    assert later.wait(timeout=15) == 0, later.log
    assert [(r["id"], r["attempt"]) for r in runs(app, "end")] == [(job_id, 1)]
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0


# -- queue restart ------------------------------------------------------------


def restart(app: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "queue", "restart"]
        + ["--database", database_url],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_queue_restart_stops_idle_workers_but_not_later_ones(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """``queue restart`` makes both idle workers exit with code 0 within
    about a second of their next heartbeat, even with a long ``--sleep``;
    a worker started afterwards keeps running and takes jobs."""
    create_tables(database_url)
    idle = [spawn("--sleep=10"), spawn("--sleep=10")]
    wait_for_workers(engine, idle)
    time.sleep(0.5)  # both are now in their first idle sleep

    asked = restart(app, database_url)
    requested = time.monotonic()
    assert asked.returncode == 0, asked.stderr
    assert "asked 2 worker(s)" in asked.stdout
    # Well under --sleep: the flag must be seen during an idle sleep too.
    deadline = requested + 3
    codes = [worker.wait(max(deadline - time.monotonic(), 0.1)) for worker in idle]
    assert codes == [0, 0], [worker.log for worker in idle]

    fresh = spawn("--sleep=0.1")

    wait_for_workers(engine, [fresh])
    time.sleep(1.5)
    assert fresh.process.poll() is None, fresh.log
    push(database_url, "Record", None)
    wait_until(lambda: runs(app, "run"), 10, "the later worker ran a job")
    fresh.signal(signal.SIGTERM)
    assert fresh.wait(timeout=10) == 0, fresh.log


def test_queue_restart_lets_the_running_job_finish_and_takes_no_other(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """``queue restart`` while a 1.5 s job runs: that job finishes, the job
    waiting behind it is not taken, and the worker exits with code 0."""
    [sleep_id] = push(database_url, "Sleep", {"seconds": 1.5})
    [waiting_id] = push(database_url, "Record", None)
    worker = spawn("--sleep=0.1")

    wait_until(lambda: runs(app, "start"), 15, "the job started")
    asked = restart(app, database_url)
    code = worker.wait(timeout=15)

    assert asked.returncode == 0, asked.stderr
    assert code == 0, worker.log
    assert [(r["id"], r["event"]) for r in runs(app)] == [
        (sleep_id, "start"),
        (sleep_id, "end"),
    ], "the worker took another job after queue restart"
    assert [row["id"] for row in table(engine, "jobs")] == [waiting_id]


# -- Q09: a job stuck in C code -----------------------------------------------


@pytest.mark.slow
def test_a_job_stuck_in_c_code_is_stopped_by_the_timeout(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Case Q09: ``sum(range(10**13))`` never returns to the interpreter;
    ``--timeout=2`` kills its process after about 2 s on each of the two
    tries, the job lands in ``failed_jobs`` with a timeout message, and the
    next job still runs."""
    [stuck_id] = push(database_url, "Stuck", None)
    [record_id] = push(database_url, "Record", None)
    worker = spawn("--timeout=2", "--tries=2", "--sleep=0.1", "--stop-when-empty")

    code = worker.wait(timeout=30)

    assert code == 0, worker.log
    attempts = runs(app, "start")
    assert [(r["id"], r["attempt"]) for r in attempts] == [(stuck_id, 1), (stuck_id, 2)]
    assert 1.9 <= attempts[1]["time"] - attempts[0]["time"] < 5, worker.log
    assert all(gone(r["pid"]) for r in attempts)
    assert runs(app, "end") == []
    assert [r["id"] for r in runs(app, "run")] == [record_id]
    [failed] = table(engine, "failed_jobs")
    assert json.loads(failed["payload"])["job"] == "Stuck"
    assert "TimeoutError" in failed["exception"]
    assert "2 s" in failed["exception"]
    assert count(engine, "jobs") == 0


# -- Q01: a long job and retry_after ------------------------------------------


@pytest.mark.slow
def test_a_job_within_its_timeout_is_never_handed_to_a_second_worker(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Case Q01, scaled down: ``retry_after = 5``, ``--timeout=4``, two
    workers and a 3 s job: it runs once, attempt 1, and nothing fails."""
    set_retry_after(app, 5)
    [job_id] = push(database_url, "Sleep", {"seconds": 3})
    workers = [spawn("--timeout=4", "--sleep=0.1") for _ in range(2)]

    wait_until(lambda: runs(app, "end"), 20, "the job finished")
    time.sleep(0.2)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    codes = [worker.wait(timeout=10) for worker in workers]

    assert codes == [0, 0], [worker.log for worker in workers]
    assert [(r["id"], r["attempt"]) for r in runs(app, "start")] == [(job_id, 1)]
    assert count(engine, "jobs") == 0
    assert count(engine, "failed_jobs") == 0


@pytest.mark.slow
def test_a_job_reserved_late_in_a_second_is_not_handed_out_early(
    app: Path, database_url: str, engine: sa.Engine, spawn: Spawn
) -> None:
    """Case Q01 at the edge the settings allow: ``retry_after = 3`` and
    ``--timeout=2.8``, a 2.5 s job reserved 0.85 s into a second, a second
    worker polling: the job still runs once, since its lease lasts the full
    3 s."""
    set_retry_after(app, 3)
    push(database_url, "Until", {"fraction": 0.85})
    [job_id] = push(database_url, "Sleep", {"seconds": 2.5})
    first = spawn("--timeout=2.8", "--sleep=0.1")
    wait_until(lambda: runs(app, "start"), 15, "the job started")
    second = spawn("--timeout=2.8", "--sleep=0.1")

    wait_until(lambda: runs(app, "end"), 15, "the job finished")
    time.sleep(0.3)
    for worker in (first, second):
        worker.signal(signal.SIGTERM)
    codes = [worker.wait(timeout=10) for worker in (first, second)]

    assert codes == [0, 0], [first.log, second.log]
    assert table(engine, "failed_jobs") == [], "failed while it ran and succeeded"
    starts = [(r["id"], r["attempt"]) for r in runs(app, "start")]
    assert starts == [(job_id, 1)], f"ran again while running: {starts}"
    assert "lease ran out" not in first.log
    assert count(engine, "jobs") == 0


@pytest.mark.databases("sqlite")
def test_a_timeout_not_below_retry_after_is_refused(
    app: Path, database_url: str, spawn: Spawn
) -> None:
    """``--timeout`` equal to ``retry_after`` would let a second worker take a
    job still running: the worker refuses to start, in one line."""
    set_retry_after(app, 5)
    worker = spawn("--timeout=5")

    code = worker.wait(timeout=30)

    assert code == 1
    lines = worker.log.strip().splitlines()
    assert len(lines) == 1, worker.log
    assert lines[0].startswith("error: ")
    assert "--timeout" in lines[0]
    assert "retry_after" in lines[0]
    assert "Traceback" not in worker.log


# -- the database drops the worker's connections ------------------------------


def drop_worker_connections(engine: sa.Engine, database_name: str, tag: str) -> int:
    """Make the server close the worker's connections; how many it closed.

    PostgreSQL: only backends with the worker's ``application_name``, since
    every test's schema lives in the one shared database. MariaDB: every
    other connection to this test's own database."""
    with engine.connect() as connection:
        if database_name == "postgresql":
            result = connection.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name = :tag"
                ),
                {"tag": tag},
            )
            return len(result.all())
        ids = connection.execute(
            sa.text(
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
            )
        ).scalars()
        killed = 0
        for connection_id in list(ids):
            connection.execute(sa.text(f"KILL {int(connection_id)}"))
            killed += 1
        return killed


@pytest.mark.slow
@pytest.mark.databases("postgresql", "mysql")
def test_a_worker_outlives_its_database_connections(
    app: Path,
    database_url: str,
    database_name: str,
    engine: sa.Engine,
    spawn: Spawn,
) -> None:
    """The server closes an idle worker's connections (the database
    restarted, a proxy or an administrator cut them): the worker logs a
    warning, keeps running, and runs a job pushed afterwards.

    With ``--sleep=1`` the first statement after the cut is always the
    heartbeat, which must not hide the trouble."""
    tag = f"conveyor_worker_{os.getpid()}"
    url = database_url
    if database_name == "postgresql":
        url = (
            sa.make_url(database_url)
            .update_query_dict({"application_name": tag})
            .render_as_string(hide_password=False)
        )
    push(database_url, "Record", None)  # creates the tables
    worker = spawn("--sleep=1", "--log-format=json", url=url)
    wait_until(lambda: runs(app, "run"), 15, "the first job ran")
    time.sleep(1.5)  # half-way through an idle --sleep, not as it ends

    killed = drop_worker_connections(engine, database_name, tag)
    time.sleep(2)
    [job_id] = push(database_url, "Record", None)
    ran = wait_until(
        lambda: [r for r in runs(app, "run") if r["id"] == job_id],
        20,
        "the job pushed after the connections were cut ran",
    )
    alive = worker.process.poll() is None
    worker.signal(signal.SIGTERM)
    code = worker.wait(timeout=10)

    assert killed >= 1
    assert ran and alive, worker.log
    assert code == 0, worker.log
    events = [json.loads(line) for line in worker.log.splitlines() if line[:1] == "{"]
    assert "warning" in [event["level"] for event in events], worker.log

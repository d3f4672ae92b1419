"""Small tools for tests: migration and job files from strings, table rows,
the CLI run the way a user runs it, and workers as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from conveyor import Queue
from conveyor.cli import main
from conveyor.db import connect
from conveyor.drivers.database import DatabaseStore


def table_names(engine: sa.Engine) -> set[str]:
    """The tables of the test's database, lower-cased, leaving out the table
    of unfinished attempts that MySQL and MariaDB keep beside ``migrations``."""
    with engine.connect() as connection:
        names = {name.lower() for name in sa.inspect(connection).get_table_names()}
    return names - {"migrations_attempts"}


def write_migration(folder: Path, name: str, body: str) -> Path:
    """Write ``folder/name.py`` with ``body`` dedented; ``name`` is the full
    stem, e.g. ``2024_01_01_000000_create_widgets``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def write_job(root: Path, name: str, body: str) -> Path:
    """Write ``root/jobs/name.py`` with ``body`` dedented: a job module of the
    application folder ``root``, imported by the worker's child process."""
    folder = root / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def add_worker(
    store: DatabaseStore,
    worker_id: str,
    heartbeat_at: int | None = None,
    current_job: int | None = None,
) -> None:
    """A row of the workers table, as a worker on another host registers
    it; its heartbeat now unless ``heartbeat_at`` says when."""
    beat = store.now() if heartbeat_at is None else heartbeat_at
    with store.engine.begin() as connection:
        connection.execute(
            sa.insert(store.tables.workers).values(
                id=worker_id,
                host="elsewhere",
                pid=4242,
                queues="default",
                started_at=beat,
                heartbeat_at=beat,
                current_job=current_job,
                stop_requested=False,
            )
        )


def rows(engine: sa.Engine, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` as a dict, by id; none when it does not exist."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(table):
            return []
        result = connection.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))
        return [dict(row) for row in result.mappings()]


def payload_of(row: dict[str, Any]) -> dict[str, Any]:
    """The decoded payload of a ``jobs`` or ``failed_jobs`` row."""
    body: dict[str, Any] = json.loads(row["payload"])
    return body


def table_migration(table: str, class_name: str = "M") -> str:
    """A migration creating ``table`` with an id and a name column."""
    return f"""
        import sqlalchemy as sa
        from conveyor import Migration

        class {class_name}(Migration):
            def up(self):
                self.schema.create_table(
                    "{table}",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(50)),
                )

            def down(self):
                self.schema.drop_table("{table}")
    """


def write_table_migrations(root: Path, tables: list[str], *, start: int = 0) -> Path:
    """One migration per table, ``2024_01_01_00000N_create_TABLE``, numbered
    from ``start``, in ``root/migrations``; that folder."""
    folder = root / "migrations"
    for offset, table in enumerate(tables, start=start):
        write_migration(
            folder, f"2024_01_01_{offset:06d}_create_{table}", table_migration(table)
        )
    return folder


def batches(engine: sa.Engine) -> list[tuple[str, int]]:
    """Each recorded migration's name after its timestamp, and its batch."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT migration, batch FROM migrations ORDER BY id")
        )
        return [(row[0][18:], row[1]) for row in rows]


def migrations_recorded(engine: sa.Engine, table: str = "migrations") -> list[str]:
    """The migrations recorded as applied, in the order they were; none when
    the table does not exist."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(table):
            return []
        query = sa.text(f"SELECT migration FROM {table} ORDER BY id")
        return [row[0] for row in connection.execute(query)]


def status_line(stdout: str, name: str) -> str:
    """The line of ``migrate status`` output that names ``name``."""
    return next(line for line in stdout.splitlines() if name in line)


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    args: list[str],
    *,
    cwd: Path,
    database_url: str | None = None,
    input: str | None = None,
) -> Outcome:
    """Run ``conveyor ARGS`` in-process from ``cwd``, as a user would."""
    if database_url is not None:
        args = [*args, "--database", database_url]
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, args, input=input, catch_exceptions=False)
    finally:
        os.chdir(old)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def run_process(
    args: list[str], *, cwd: Path, database_url: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m conveyor ARGS`` in a child process."""
    if database_url is not None:
        args = [*args, "--database", database_url]
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: The top of a job module: ``record(self, **fields)`` appends one JSON line
#: (the job's class, id, queue, attempt and time, and ``fields``) to
#: ``runs.jsonl`` in the application folder, which :func:`recorded` reads.
JOB_PREAMBLE = """
import json
import time
from pathlib import Path

from conveyor import Job

RUNS = Path(__file__).resolve().parents[1] / "runs.jsonl"


def record(job, **fields):
    context = getattr(job, "context", None)
    entry = {
        "job": type(job).__name__,
        "id": getattr(context, "id", None),
        "queue": getattr(context, "queue", None),
        "attempt": getattr(context, "attempt", None),
        "at": time.time(),
        **fields,
    }
    with RUNS.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\\n")
"""

#: ``Record`` records its data; ``Boom`` records it, then raises.
STANDARD_JOBS = """
class Record(Job):
    def handle(self, data):
        record(self, data=data)


class Boom(Job):
    def handle(self, data):
        record(self, data=data)
        raise ValueError(f"boom {data}")
"""


def write_jobs(root: Path, name: str, body: str = STANDARD_JOBS) -> Path:
    """A job module ``jobs/name.py`` of :data:`JOB_PREAMBLE` and ``body``."""
    return write_job(root, name, JOB_PREAMBLE + textwrap.dedent(body))


def recorded(root: Path) -> list[dict[str, Any]]:
    """What the jobs of :data:`JOB_PREAMBLE` recorded, in order."""
    path = root / "runs.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def work(root: Path, database_url: str, *options: str) -> Outcome:
    """``conveyor queue work --stop-when-empty --sleep 0 OPTIONS`` in-process
    from the application folder ``root``."""
    return run_cli(
        ["queue", "work", "--stop-when-empty", "--sleep", "0", *options],
        cwd=root,
        database_url=database_url,
    )


def steps(root: Path, *fields: str) -> list[tuple[Any, ...]]:
    """Each run :func:`recorded` as a tuple of ``fields``."""
    return [tuple(run.get(name) for name in fields) for run in recorded(root)]


def failed_by_job(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """The failed_jobs rows by the job name in their payload (or the payload
    itself when it is not JSON)."""
    found = {}
    for row in rows(engine, "failed_jobs"):
        try:
            name = json.loads(row["payload"])["job"]
        except ValueError:
            name = row["payload"]
        found[name] = row
    return found


def make_due(engine: sa.Engine) -> None:
    """Make every waiting job due now, instead of sleeping until it is."""
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE jobs SET available_at = :now"), {"now": int(time.time())}
        )


def queue_cli(root: Path, database_url: str, *args: str) -> Outcome:
    """``conveyor queue ARGS`` in-process from ``root``."""
    return run_cli(["queue", *args], cwd=root, database_url=database_url)


# -- processes: migration runs and workers ------------------------------------


#: A migration that creates a table, then sleeps for a minute: a run that is
#: still going when a test needs one (to kill it, or to wait for its lock).
SLOW_MIGRATION = """
    import time
    from conveyor import Migration

    class Slow(Migration):
        def up(self):
            self.db.execute("CREATE TABLE slow_marker (id INTEGER PRIMARY KEY)")
            time.sleep(60)

        def down(self):
            self.db.execute("DROP TABLE slow_marker")
"""


def spawn_cli(args: list[str], cwd: Path, database_url: str) -> subprocess.Popen[str]:
    """Start ``python -m conveyor ARGS --database URL`` in its own process
    group, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args, "--database", database_url],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


#: The job classes of worker processes, in ``jobs/demo.py`` of the folder
#: :func:`write_demo_app` makes. Every job writes one JSON line per event to
#: ``runs.log`` in that folder, with ``O_APPEND`` so that lines from several
#: processes never mix: that file, not the worker's log, is the record of
#: what ran.
DEMO_JOBS = """
    import json
    import os
    import time
    from pathlib import Path

    from conveyor import Job

    RUNS = Path(__file__).resolve().parent.parent / "runs.log"


    def record(job, event, **fields):
        line = json.dumps(
            {
                "event": event,
                "job": type(job).__name__,
                "id": job.context.id,
                "attempt": job.context.attempt,
                "pid": os.getpid(),
                "time": time.time(),
                **fields,
            },
            ensure_ascii=False,
        )
        fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)


    class Record(Job):
        def handle(self, data):
            record(self, "run", data=data)


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


    class KillWorker(Job):
        # Kills the worker running it, every time: SIGKILL to the job
        # process's parent, which takes the job process down with it.
        def handle(self, data):
            record(self, "start")
            os.kill(os.getppid(), 9)
            time.sleep(10)


    class Gate(Job):
        # Runs until the file data["go"] exists (30 s at most): a job that
        # ends when the test says so, not after a guessed time.
        def handle(self, data):
            record(self, "start")
            go = Path(data["go"])
            deadline = time.monotonic() + 30
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            record(self, "end")
"""


def write_demo_app(root: Path) -> Path:
    """Make ``root`` an application folder with :data:`DEMO_JOBS`."""
    write_job(root, "demo", DEMO_JOBS)
    return root


def set_retry_after(app: Path, seconds: int) -> None:
    (app / "conveyor.toml").write_text(f"[queue]\nretry_after = {seconds}\n")


def runs(app: Path, event: str | None = None) -> list[Any]:
    """The records :data:`DEMO_JOBS` wrote so far (of ``event`` only, if
    given), oldest first; a line still being written is left out."""
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


#: What the ``spawn`` fixture gives: ``spawn(*options, url=..., env=...)``.
Spawn = Callable[..., WorkerProcess]


def start_worker(
    app: Path,
    url: str,
    options: tuple[str, ...],
    log_path: Path,
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    """Start ``conveyor queue work OPTIONS --database URL`` in ``app``, with
    ``env`` added to the environment."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "queue", "work", *options]
            + ["--database", url],
            cwd=app,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return WorkerProcess(process, log_path)


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


def tagged_url(database_url: str, database_name: str, tag: str) -> str:
    """``database_url`` whose PostgreSQL connections carry ``tag`` as their
    ``application_name``, so :func:`drop_worker_connections` can find them."""
    if database_name != "postgresql":
        return database_url
    url = sa.make_url(database_url).update_query_dict({"application_name": tag})
    return url.render_as_string(hide_password=False)


def drop_worker_connections(engine: sa.Engine, database_name: str, tag: str) -> int:
    """Make the server close the worker's connections; how many it closed.

    PostgreSQL: only backends with the worker's ``application_name`` (see
    :func:`tagged_url`), since every test's schema lives in the one shared
    database. MariaDB: every other connection to this test's own database."""
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


#: What :func:`fill_every_state` leaves, per queue: ready, delayed, running,
#: failed.
EVERY_STATE = {"default": (3, 1, 0, 2), "mail": (2, 0, 1, 1)}
#: A payload and an error that would run script if rendered as HTML.
HOSTILE = "<script>window.pwned = 1</script><img src=x onerror=alert(1)>"


def fill_every_state(url: str) -> dict[str, list[int]]:
    """Jobs in every state on queues ``default`` and ``mail`` (see
    :data:`EVERY_STATE`), one failed job with a hostile payload and error,
    and 5 done and 2 failed counted this minute; the ids by kind."""
    from conveyor.worker.metrics import MinuteCounts

    queue = Queue(url)
    store = queue.store
    ids: dict[str, list[int]] = {"failed": [], "running": []}
    try:
        for queue_name, data in (
            ("default", {"n": 1}),
            ("default", {"n": 2}),
            ("mail", {"to": HOSTILE}),
        ):
            queue.push("Boom", data, queue=queue_name)
            job = store.reserve(queue_name)
            assert job is not None
            error = f"Traceback (most recent call last):\nValueError: boom {HOSTILE}"
            store.fail(job, error, "")
            ids["failed"].append(job.id)
        queue.push("SendWelcomeEmail", {"to": "held@example.com"}, queue="mail")
        running = store.reserve("mail", "someone")
        assert running is not None
        ids["running"].append(running.id)
        ids["ready"] = [
            *queue.bulk("Record", [{"n": n} for n in range(3)]),
            *queue.bulk("SendWelcomeEmail", [{"to": "a@example.com"}] * 2, "mail"),
        ]
        ids["delayed"] = [queue.later(3600, "SendReminder", {"user": 7})]

        metrics = MinuteCounts(store)
        for outcome in ["DONE"] * 5 + ["FAILED"] * 2:
            metrics.count("default", outcome)
        metrics.flush(force=True)
    finally:
        queue.close()
    return ids

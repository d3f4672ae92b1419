"""Fault campaign: does the queue lose or repeat jobs when its workers and its
database are treated badly?

What it does
    On one database (``--database``, default a SQLite file in a temporary
    folder) it generates an application folder with the jobs of
    ``bench/chaos_jobs.py`` and a ``conveyor.toml`` with a short
    ``retry_after``, empties the queue's tables and its own, then:

    * two producer processes push ``--jobs`` jobs (half each), spread over
      the first part of the run: some in bulk, some one at a time, a tenth
      with ``later()`` delays. The mix: 80 % instant, 5 % slow (0.2-1 s),
      10 % flaky (fail on attempt 1, succeed on attempt 2), 5 % doomed (fail
      every attempt, so they end in ``failed_jobs``);
    * ``--workers`` ``conveyor queue work`` processes drain them, each in a
      session of its own so a signal reaches the job process too;
    * meanwhile the campaign SIGKILLs a random worker's process group every
      few seconds and starts a new worker, SIGTERMs another now and then
      (and starts a replacement), and on PostgreSQL and MariaDB terminates
      the workers' database connections every few seconds; with
      ``--restart-server`` it restarts the database server once, a third of
      the way through.

    Every run of a job records itself in the ``chaos_runs`` table (job id,
    attempt, worker pid, job process pid, start, due time) and marks the run
    finished at the end of ``handle``. When the producers are done and the
    ``jobs`` table is empty, the workers are stopped with SIGTERM and the
    records are checked:

    lost
        pushed, but neither completed (a run that finished ``ok``) nor in
        ``failed_jobs``. Must be 0.
    duplicated
        jobs that ran more than the retry policy explains: an attempt number
        that ran twice (or went back), a run after a run that completed, a
        run beyond ``--tries``, or two runs at once.
    duplicated_unexplained
        those of them whose earlier run's worker was not SIGKILLed by the
        campaign while that run was in progress (between its start and the
        repeat's start). A worker killed after its job finished but before
        it recorded the outcome explains one repeat, and so does a worker
        killed while its row did not name the job as running, which gives
        the job back with that attempt uncounted (the same attempt number
        runs again); nothing else does. Must be 0.
    worst_delay_s
        the longest wait between a delayed job's due time and its first run
        (``worst_delay_beyond_backlog_s``: the same, less the time spent
        behind jobs due at once that were pushed before it).

    It also checks that each failed job's ``failed()`` hook ran once, and
    counts job ids that ran although no producer got them back: a push
    whose commit went through while its connection died, pushed again.
    ``docs/reliability.md`` explains every figure and gives the results.

How to run it
    python bench/chaos.py --jobs 1000                     # SQLite, CI size
    python bench/chaos.py --database postgresql://postgres@127.0.0.1:5432/test \\
        --restart-server                                  # full size: 20,000
    python bench/chaos.py --database mysql://root@127.0.0.1:3306/test --json

    On PostgreSQL and MariaDB the given database is used as it is: the
    queue's tables (``jobs``, ``failed_jobs``, ``job_workers``),
    ``chaos_runs`` and ``chaos_failed_hooks`` are dropped at the start.
    Terminating connections on PostgreSQL only touches connections named
    ``conveyor-chaos`` (the campaign sets ``application_name``), so other
    users of the server are spared; on MariaDB it kills every other
    connection to the database. ``--restart-server`` restarts the local
    server, which everybody else on it notices too; the server is always
    left running.

    Progress goes to standard error; the figures to standard output, and
    with ``--json`` the last line is one JSON object holding them. The exit
    code is 1 when a job was lost or repeated without explanation. Worker
    logs stay in the temporary folder (named on standard error) when
    ``--keep`` is given or something did not hold.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from chaos_jobs import (
    APPLICATION_NAME,
    HOOKS_TABLE,
    RUNS_TABLE,
    engine_for,
    metadata,
)

from conveyor import Queue

T = TypeVar("T")
#: A producer process and the file where it writes what it pushed.
Producer = tuple[BaseProcess, Path]

# -- the campaign's settings --------------------------------------------------

#: Short, so that a killed worker's job comes back quickly; above --timeout,
#: which the worker insists on.
RETRY_AFTER = 15
WORKER_TIMEOUT = 10
TRIES = 3
BACKOFF = "1,2"
WORKER_SLEEP = 1
PRODUCERS = 2
QUEUE_TABLES = ("jobs", "failed_jobs", "job_workers")

#: The job mix: class name and share of the jobs.
MIX = (("Instant", 0.80), ("Slow", 0.05), ("Flaky", 0.10), ("Doomed", 0.05))
DELAYED_SHARE = 0.10
MAX_DELAY = 20

#: Seconds between two faults of a kind, drawn uniformly from the range.
SIGKILL_EVERY = (2.0, 6.0)
SIGTERM_EVERY = (8.0, 16.0)
CONNECTION_KILL_EVERY = (4.0, 10.0)
#: A worker asked to stop with SIGTERM finishes its job; past this it is
#: reported as overdue and killed.
STOP_GRACE = WORKER_TIMEOUT + 20
PROGRESS_EVERY = 5.0
MONITOR_NAME = "conveyor-chaos-monitor"

#: Lines of a worker's log worth counting, by what they mean.
LOG_PATTERNS = {
    "tracebacks": "Traceback (most recent call last)",
    # SQLAlchemy's pool, logging (with a traceback) that it could not roll
    # back a connection the server had just dropped: harmless.
    "pool_reset_errors": "Exception during reset or similar",
    "database_unreachable": "database unreachable",
    "lease_lost": "its lease ran out",
    "outcome_not_recorded": "could not record its outcome",
    "bookkeeping_failed": "bookkeeping failed",
    "cli_errors": "error: ",
}


@dataclass(frozen=True)
class Options:
    database: str
    jobs: int
    workers: int
    restart_server: bool
    json: bool
    seed: int
    push_seconds: float
    max_seconds: float
    keep: bool
    #: ``--prefetch`` of the workers; ``None`` for the worker's default.
    prefetch: int | None = None


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Fault campaign for Conveyor's queue (see the module docstring)."
    )
    parser.add_argument("--database", help="database URL (default: a SQLite file)")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--restart-server",
        action="store_true",
        help="restart the (local) PostgreSQL or MariaDB server once mid-run",
    )
    parser.add_argument("--json", action="store_true", help="end with a JSON line")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument(
        "--push-seconds",
        type=float,
        default=None,
        help="spread the pushes over this long (default: N/50, 10 to 60 s)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="give up waiting for the queue to drain after this long",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="the workers' --prefetch (default: the worker's own default)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.workers < 1:
        parser.error("--jobs and --workers must be 1 or more")
    if args.prefetch is not None and args.prefetch < 1:
        parser.error(f"--prefetch must be 1 or more, not {args.prefetch}")
    return Options(
        database=args.database or "",
        jobs=args.jobs,
        workers=args.workers,
        restart_server=args.restart_server,
        json=args.json,
        seed=args.seed if args.seed is not None else random.randrange(2**32),
        push_seconds=args.push_seconds or min(60.0, max(10.0, args.jobs / 50)),
        # Generous: the drain rate varies a lot between databases and
        # machines, and a campaign that gives up too early proves nothing.
        max_seconds=args.max_seconds or 600.0 + args.jobs * 0.15,
        keep=args.keep,
        prefetch=args.prefetch,
    )


def say(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


# -- the jobs to push -----------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One job to push: its tag (unique in the campaign), class, and how."""

    tag: str
    kind: str
    #: How long a Slow job sleeps.
    seconds: float | None = None
    #: Seconds from its push until it is due; 0 for a job due at once.
    delay: int = 0


def plan_jobs(count: int, rng: random.Random) -> list[Spec]:
    kinds = [kind for kind, _ in MIX]
    weights = [share for _, share in MIX]
    specs = []
    for number in range(count):
        kind = rng.choices(kinds, weights)[0]
        seconds = round(rng.uniform(0.2, 1.0), 2) if kind == "Slow" else None
        delay = rng.randint(1, MAX_DELAY) if rng.random() < DELAYED_SHARE else 0
        specs.append(Spec(f"j{number:06d}", kind, seconds, delay))
    return specs


# -- the application folder -----------------------------------------------------


def make_app(folder: Path, url: str) -> Path:
    """An application folder: jobs/, conveyor.toml, and chaos.json for the
    jobs' own connection."""
    app = folder / "app"
    (app / "jobs").mkdir(parents=True)
    (app / "logs").mkdir()
    shutil.copy(Path(__file__).with_name("chaos_jobs.py"), app / "jobs")
    (app / "conveyor.toml").write_text(
        f'database_url = "{url}"\njobs = "jobs"\n\n'
        f"[queue]\nretry_after = {RETRY_AFTER}\n",
        encoding="utf-8",
    )
    (app / "chaos.json").write_text(json.dumps({"database_url": url}))
    return app


def subject_url(url: str) -> str:
    """The URL the workers, producers and jobs use: on PostgreSQL it names
    their connections, so that only they are terminated."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    named = parsed.update_query_dict({"application_name": APPLICATION_NAME})
    return named.render_as_string(hide_password=False)


# -- the database ---------------------------------------------------------------


class Database:
    """The campaign's own view of the database: setting up, watching, and
    the faults it causes there."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self.family = self.url.get_backend_name()
        # No pool: a pooled connection could be one that was just terminated.
        self.engine = engine_for(url, pooled=False, name=MONITOR_NAME)

    @property
    def is_server(self) -> bool:
        return self.family in ("postgresql", "mysql")

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def reset(self, url: str) -> None:
        """Drop the queue's tables and the runs table, then create them
        afresh, so every campaign starts from nothing."""
        with self.engine.begin() as connection:
            for name in (RUNS_TABLE, HOOKS_TABLE, *QUEUE_TABLES):
                sa.Table(name, sa.MetaData()).drop(connection, checkfirst=True)
            metadata.create_all(connection)
        queue = Queue(url)
        try:
            queue.store.ensure_tables()
        finally:
            queue.close()

    def scalar(self, sql: str) -> Any:
        """One value, or ``None`` while the database cannot answer (it may
        be restarting: the campaign asks again later)."""
        try:
            with self.engine.connect() as connection:
                return connection.execute(sa.text(sql)).scalar()
        except sa.exc.DBAPIError:
            return None

    def rows(self, sql: str) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.text(sql)))

    def terminate_connections(self) -> int:
        """End the subjects' connections; how many were ended."""
        try:
            with self.engine.begin() as connection:
                if self.family == "postgresql":
                    return _terminate_postgresql(connection)
                return _kill_mariadb(connection)
        except sa.exc.DBAPIError as exc:
            say(f"could not terminate connections: {exc.orig}")
            return 0

    def wait_until_ready(self, seconds: float = 90.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.scalar("SELECT 1") == 1:
                return True
            time.sleep(0.5)
        return False

    def restart_server(self) -> float:
        """Restart the local server; the seconds it was away."""
        started = time.monotonic()
        if self.family == "postgresql":
            _run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version()]
                + ["main", "restart"]
            )
        else:
            self._stop_mariadb()
            _start_mariadb()
        if not self.wait_until_ready():
            raise RuntimeError("the database server did not come back")
        return time.monotonic() - started

    def ensure_running(self) -> None:
        """Start the server if it is down: the campaign never leaves it so."""
        if not self.is_server or self.wait_until_ready(3):
            return
        say("the database server is down; starting it")
        if self.family == "postgresql":
            _run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version()]
                + ["main", "start"]
            )
        else:
            _start_mariadb()
        if not self.wait_until_ready():
            say("WARNING: the database server did not start")

    def _stop_mariadb(self) -> None:
        url = self.url
        env = {**os.environ, "MYSQL_PWD": url.password or ""}
        command = ["mariadb-admin", "--protocol=tcp", f"-h{url.host or '127.0.0.1'}"]
        command += [f"-P{url.port or 3306}", f"-u{url.username or 'root'}"]
        _run([*command, "shutdown"], env=env)
        # Starting again before the old server is gone would do nothing.
        deadline = time.monotonic() + 60
        while _mariadb_running() and time.monotonic() < deadline:
            time.sleep(0.2)


def _terminate_postgresql(connection: sa.Connection) -> int:
    result = connection.execute(
        sa.text(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = :name AND pid <> pg_backend_pid()"
        ),
        {"name": APPLICATION_NAME},
    )
    return int(result.scalar() or 0)


def _kill_mariadb(connection: sa.Connection) -> int:
    ids = connection.execute(
        sa.text(
            "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
        )
    ).scalars()
    killed = 0
    for thread in list(ids):
        try:
            connection.exec_driver_sql(f"KILL {int(thread)}")
            killed += 1
        except sa.exc.DBAPIError:
            pass  # it ended by itself in the meantime
    return killed


def _pg_version() -> str:
    return sorted(os.listdir("/etc/postgresql"))[0]


def _mariadb_running() -> bool:
    status = ["start-stop-daemon", "--status", "--exec", "/usr/sbin/mariadbd"]
    return subprocess.run(status, check=False).returncode == 0


def _start_mariadb() -> None:
    _run(
        ["start-stop-daemon", "--start", "--oknodo", "--background"]
        + ["--exec", "/usr/sbin/mariadbd"]
    )


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(command, check=True, timeout=120, env=env, capture_output=True)


def is_local(url: sa.URL) -> bool:
    return (url.host or "localhost") in ("127.0.0.1", "localhost", "::1")


# -- the workers ------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    #: When it was sent SIGTERM (monotonic), if it was.
    stopping_since: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass(frozen=True)
class Kill:
    """A SIGKILL the campaign sent: to which worker, and when (epoch)."""

    pid: int
    at: float


@dataclass
class Faults:
    """What the campaign did, and what it saw go wrong with the workers."""

    kills: list[Kill] = field(default_factory=list)
    terms: int = 0
    connection_kills: int = 0
    connection_kill_rounds: int = 0
    server_restarts: int = 0
    server_downtime_s: float = 0.0
    #: What went wrong with a worker, by kind ("exited unasked", "SIGTERM
    #: exit not 0", "stop overdue"): one line each, with the log's tail.
    worker_incidents: dict[str, list[str]] = field(
        default_factory=lambda: defaultdict(list)
    )


class Fleet:
    """The worker processes, each the leader of its own session."""

    def __init__(
        self, app: Path, url: str, faults: Faults, prefetch: int | None
    ) -> None:
        self.app = app
        self.url = url
        self.faults = faults
        self.prefetch = prefetch
        self.workers: list[Worker] = []
        #: How many workers were started in all.
        self.started = 0

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "conveyor",
            "queue",
            "work",
            "-v",  # tracebacks of errors, for the report
            f"--database={self.url}",
            f"--tries={TRIES}",
            f"--backoff={BACKOFF}",
            f"--sleep={WORKER_SLEEP}",
            f"--timeout={WORKER_TIMEOUT}",
        ] + ([] if self.prefetch is None else [f"--prefetch={self.prefetch}"])

    def start(self) -> Worker:
        self.started += 1
        name = f"worker-{self.started:03d}"
        log = self.app / "logs" / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                self.command(),
                cwd=self.app,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(name, process, log)
        self.workers.append(worker)
        return worker

    def working(self) -> list[Worker]:
        return [w for w in self.workers if w.stopping_since is None]

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL a random worker with its job process, and replace it."""
        candidates = self.working()
        if not candidates:
            return
        worker = rng.choice(candidates)
        with contextlib.suppress(ProcessLookupError):  # it died by itself
            os.killpg(worker.pid, signal.SIGKILL)
        self.faults.kills.append(Kill(worker.pid, time.time()))
        worker.process.wait()
        self.workers.remove(worker)
        self.start()

    def terminate_one(self, rng: random.Random) -> None:
        """SIGTERM a random worker (it finishes its job), and replace it."""
        candidates = self.working()
        if not candidates:
            return
        worker = rng.choice(candidates)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.stopping_since = time.monotonic()
        self.faults.terms += 1
        self.start()

    def look_after(self) -> None:
        """Reap workers that stopped; replace one that died unasked, and
        kill one that takes too long to stop."""
        for worker in list(self.workers):
            code = worker.process.poll()
            if code is None:
                self._hurry(worker)
                continue
            self.workers.remove(worker)
            if worker.stopping_since is None:
                self._incident(worker, "exited unasked", f"code {code}")
                self.start()
            elif code != 0:
                self._incident(worker, "SIGTERM exit not 0", f"code {code}")

    def stop_all(self) -> None:
        for worker in self.working():
            os.killpg(worker.pid, signal.SIGTERM)
            worker.stopping_since = time.monotonic()
        while self.workers:
            self.look_after()
            time.sleep(0.1)

    def kill_all(self) -> None:
        """The last resort, when the campaign itself is interrupted."""
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.process.wait()
        self.workers.clear()

    def _hurry(self, worker: Worker) -> None:
        since = worker.stopping_since
        if since is None or time.monotonic() - since < STOP_GRACE:
            return
        self._incident(worker, "stop overdue", f"running {STOP_GRACE} s after SIGTERM")
        os.killpg(worker.pid, signal.SIGKILL)
        # Counted as a kill: a repeat of its job is then explained.
        self.faults.kills.append(Kill(worker.pid, time.time()))
        worker.process.wait()
        self.workers.remove(worker)

    def _incident(self, worker: Worker, kind: str, detail: str) -> None:
        lines = worker.log.read_text(errors="replace").strip().splitlines()
        tail = " | ".join(lines[-2:])
        message = f"{worker.name} (pid {worker.pid}) {kind}, {detail}: {tail}"
        self.faults.worker_incidents[kind].append(message)
        say(message)


# -- the producers ----------------------------------------------------------------


@dataclass
class PushRetries:
    """How many pushes a producer had to make again."""

    count: int = 0


def produce(url: str, specs: list[Spec], out: str, seconds: float, seed: int) -> None:
    """Push ``specs`` in chunks (bulk or one by one; delayed ones with
    ``later``), spread over ``seconds``; write each acknowledged job id to
    ``out``. Runs in a process of its own."""
    rng = random.Random(seed)
    queue = Queue(url)
    started = time.monotonic()
    pushed = 0
    retries = PushRetries()
    with open(out, "w", encoding="utf-8") as record:
        while pushed < len(specs):
            chunk = specs[pushed : pushed + rng.randint(1, 40)]
            for spec, job_id, due in _push_chunk(queue, chunk, rng, retries):
                line = {"tag": spec.tag, "kind": spec.kind, "id": job_id, "due": due}
                record.write(json.dumps(line) + "\n")
            record.flush()
            pushed += len(chunk)
            # Keep pace, so the workers drain while the producers push.
            time.sleep(
                max(0.0, started + seconds * pushed / len(specs) - time.monotonic())
            )
        record.write(json.dumps({"retries": retries.count}) + "\n")
    queue.close()


def _push_chunk(
    queue: Queue, chunk: list[Spec], rng: random.Random, retries: PushRetries
) -> Iterator[tuple[Spec, int | None, int | None]]:
    """Push one chunk; yields each spec with its job id (``None`` when the
    push never went through) and its due time."""
    ready = [spec for spec in chunk if not spec.delay]
    if rng.random() < 0.5:
        for kind in sorted({spec.kind for spec in ready}):
            group = [spec for spec in ready if spec.kind == kind]
            items = [_data(spec) for spec in group]
            pushed = _patiently(partial(queue.bulk, kind, items), retries)
            ids: Sequence[int | None] = pushed or [None] * len(group)
            for spec, job_id in zip(group, ids, strict=True):
                yield spec, job_id, None
    else:
        for spec in ready:
            job_id = _patiently(partial(queue.push, spec.kind, _data(spec)), retries)
            yield spec, job_id, None
    for spec in chunk:
        if spec.delay:
            due = math.ceil(time.time()) + spec.delay
            when = dt.datetime.fromtimestamp(due, dt.timezone.utc)
            push = partial(queue.later, when, spec.kind, _data(spec, due))
            yield spec, _patiently(push, retries), due


def _data(spec: Spec, due: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"tag": spec.tag}
    if spec.seconds is not None:
        data["seconds"] = spec.seconds
    if due is not None:
        data["due"] = due
    return data


def _patiently(push: Callable[[], T], retries: PushRetries) -> T | None:
    """``push()``, again while the database is away (two minutes at most).

    A push whose commit went through but whose answer was lost is pushed
    twice; the report counts those ids as unacknowledged, not as repeats.
    """
    deadline = time.monotonic() + 120
    while True:
        try:
            return push()
        except sa.exc.DBAPIError:
            if time.monotonic() > deadline:
                return None
            retries.count += 1
            time.sleep(0.5)


def start_producers(
    url: str, specs: list[Spec], folder: Path, seconds: float, seed: int
) -> list[Producer]:
    # spawn: a fresh interpreter, sharing nothing (engines, sockets) with us.
    context = multiprocessing.get_context("spawn")
    producers: list[Producer] = []
    for number in range(PRODUCERS):
        out = folder / f"pushed-{number}.jsonl"
        share = specs[number::PRODUCERS]
        process = context.Process(
            target=produce, args=(url, share, str(out), seconds, seed + number)
        )
        process.start()
        producers.append((process, out))
    return producers


# -- the campaign -----------------------------------------------------------------


class Campaign:
    """Drives the workers and the faults until the queue is empty."""

    def __init__(
        self, options: Options, app: Path, database: Database, url: str
    ) -> None:
        self.options = options
        self.database = database
        self.rng = random.Random(options.seed)
        self.faults = Faults()
        self.fleet = Fleet(app, url, self.faults, options.prefetch)
        self.timed_out = False
        self._restart_due = options.restart_server and database.is_server

    def run(self, producers: list[Producer]) -> None:
        for _ in range(self.options.workers):
            self.fleet.start()
        started = time.monotonic()
        due = {
            "kill": self._next(started, SIGKILL_EVERY),
            "term": self._next(started, SIGTERM_EVERY),
            "connections": self._next(started, CONNECTION_KILL_EVERY),
            "progress": started + PROGRESS_EVERY,
        }
        try:
            while not self._drained(producers):
                now = time.monotonic()
                if now - started > self.options.max_seconds:
                    self.timed_out = True
                    say(f"gave up after {self.options.max_seconds:g} s")
                    break
                self._strike(now, due)
                if now >= due["progress"]:
                    self._progress(now - started, producers)
                    self._restart_if_due()
                    due["progress"] = now + PROGRESS_EVERY
                self.fleet.look_after()
                time.sleep(0.1)
            else:
                say("queue empty")
            say("stopping the workers with SIGTERM")
            self.fleet.stop_all()
        except BaseException:
            self.fleet.kill_all()
            raise

    def _strike(self, now: float, due: dict[str, float]) -> None:
        """Whichever faults are due."""
        if now >= due["kill"]:
            self.fleet.kill_one(self.rng)
            due["kill"] = self._next(now, SIGKILL_EVERY)
        if now >= due["term"]:
            self.fleet.terminate_one(self.rng)
            due["term"] = self._next(now, SIGTERM_EVERY)
        if self.database.is_server and now >= due["connections"]:
            self.faults.connection_kills += self.database.terminate_connections()
            self.faults.connection_kill_rounds += 1
            due["connections"] = self._next(now, CONNECTION_KILL_EVERY)

    def _restart_if_due(self) -> None:
        """Restart the server once, when a third of the jobs have run: well
        inside the run, whatever the drain rate."""
        if self._restart_due and self._runs_recorded() >= self.options.jobs / 3:
            self._restart_due = False
            say("restarting the database server")
            downtime = self.database.restart_server()
            self.faults.server_restarts += 1
            self.faults.server_downtime_s = round(downtime, 1)
            say(f"the server is back after {downtime:.1f} s")

    def _next(self, now: float, every: tuple[float, float]) -> float:
        return now + self.rng.uniform(*every)

    def _drained(self, producers: list[Producer]) -> bool:
        if any(process.is_alive() for process, _ in producers):
            return False
        return bool(self.database.scalar("SELECT COUNT(*) FROM jobs") == 0)

    def _runs_recorded(self) -> int:
        count = self.database.scalar(f"SELECT COUNT(*) FROM {RUNS_TABLE}")
        return int(count or 0)

    def _progress(self, elapsed: float, producers: list[Producer]) -> None:
        pushed = sum(_pushed_so_far(out) for _, out in producers)
        left = self.database.scalar("SELECT COUNT(*) FROM jobs")
        faults = self.faults
        say(
            f"{elapsed:6.0f} s: pushed {pushed}/{self.options.jobs}, "
            f"{left if left is not None else '?'} in jobs, "
            f"{self._runs_recorded()} runs, {len(self.fleet.workers)} workers; "
            f"{len(faults.kills)} SIGKILL, {faults.terms} SIGTERM, "
            f"{faults.connection_kills} connections ended, "
            f"{faults.server_restarts} restarts"
        )


def _pushed_so_far(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as file:
        return sum(1 for line in file if line.startswith(b'{"tag"'))


# -- what happened ----------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    job_id: int
    tag: str
    kind: str
    attempt: int
    worker_pid: int
    child_pid: int
    started_at: float
    due_at: float | None
    finished_at: float | None
    outcome: str | None


@dataclass(frozen=True)
class Pushed:
    tag: str
    kind: str
    id: int | None
    due: int | None


AFTER_COMPLETING = "ran again after completing"
SAME_ATTEMPT = "attempt ran twice"


@dataclass(frozen=True)
class Repeat:
    """A run the retry policy does not explain, and the run it repeats."""

    run: Run
    earlier: Run | None
    reason: str
    explained: bool


def read_pushed(paths: Sequence[Path]) -> tuple[list[Pushed], int]:
    """Every push the producers made, and how many times they retried."""
    pushed, retries = [], 0
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if "retries" in record:
                retries += record["retries"]
            else:
                pushed.append(Pushed(**record))
    return pushed, retries


def read_runs(database: Database) -> list[Run]:
    columns = ", ".join(Run.__dataclass_fields__)
    return [Run(*row) for row in database.rows(f"SELECT {columns} FROM {RUNS_TABLE}")]


def read_failed(database: Database) -> list[tuple[str, str, str]]:
    """(tag, job class, last line of the error) of each row of failed_jobs."""
    failed = []
    for payload, exception in database.rows(
        "SELECT payload, exception FROM failed_jobs"
    ):
        body = json.loads(payload)
        last = exception.strip().splitlines()[-1] if exception.strip() else ""
        failed.append((body["data"]["tag"], body["job"], last))
    return failed


def read_hook_calls(database: Database) -> Counter[str]:
    """How many times failed() ran, by job tag."""
    return Counter(tag for (tag,) in database.rows(f"SELECT tag FROM {HOOKS_TABLE}"))


def find_repeats(runs: list[Run], kills: list[Kill]) -> list[Repeat]:
    """The runs of one job that its retry policy does not explain."""
    ordered = sorted(runs, key=lambda run: run.started_at)
    repeats = []
    for index, run in enumerate(ordered):
        reason, earlier = _why_repeated(run, ordered[:index])
        if reason:
            # A kill explains a repeat only through the job coming back from
            # its dead worker: with its next attempt number when the worker
            # named it as running, else with the same one (only the job a
            # worker named counts an attempt; see conveyor.drivers.recovery);
            # never an attempt going back, a run past --tries, or two at once.
            explained = reason in (AFTER_COMPLETING, SAME_ATTEMPT) and (
                _killed_during(earlier, run, kills)
            )
            repeats.append(Repeat(run, earlier, reason, explained))
    return repeats


def _why_repeated(run: Run, earlier: list[Run]) -> tuple[str, Run | None]:
    if run.attempt > TRIES:
        return "beyond --tries", earlier[-1] if earlier else None
    # First, since a kill explains none: a run that ended after this began.
    for before in earlier:
        if before.finished_at is not None and before.finished_at > run.started_at:
            return "two runs at once", before
    for before in earlier:
        if before.attempt > run.attempt:
            return "attempt went back", before
    for before in earlier:
        if before.attempt == run.attempt:
            return SAME_ATTEMPT, before
    for before in earlier:
        if before.outcome == "ok":
            return AFTER_COMPLETING, before
    return "", None


def _killed_during(earlier: Run | None, run: Run, kills: list[Kill]) -> bool:
    """Whether the campaign SIGKILLed ``earlier``'s worker after ``earlier``
    started and before ``run`` started: the worker may have died before it
    recorded the outcome, and the job came back after retry_after."""
    if earlier is None:
        return False
    return any(
        kill.pid == earlier.worker_pid
        and earlier.started_at <= kill.at <= run.started_at
        for kill in kills
    )


def delays(pushed: list[Pushed], runs: list[Run]) -> list[float]:
    """Seconds from each delayed job's due time to its first run."""
    first: dict[int, float] = {}
    for run in runs:
        if run.job_id not in first or run.started_at < first[run.job_id]:
            first[run.job_id] = run.started_at
    return [
        first[job.id] - job.due
        for job in pushed
        if job.due is not None and job.id in first
    ]


def waits_beyond_backlog(pushed: list[Pushed], runs: list[Run]) -> list[float]:
    """For each delayed job, the seconds from when it could first have run to
    its first run: the later of its due time and the first run of the last
    job due at once ahead of it (a lower id: workers take the lowest id
    first). What is left is the workers' own lateness, without the time
    spent behind a backlog."""
    first: dict[int, float] = {}
    for run in runs:
        first[run.job_id] = min(first.get(run.job_id, run.started_at), run.started_at)
    ahead = 0.0
    waits = []
    for job in sorted((j for j in pushed if j.id in first), key=lambda j: j.id or 0):
        assert job.id is not None
        if job.due is None:
            ahead = max(ahead, first[job.id])
        else:
            waits.append(first[job.id] - max(job.due, ahead))
    return waits


def analyse(
    pushed: list[Pushed],
    runs: list[Run],
    failed: list[tuple[str, str, str]],
    hook_calls: Counter[str],
    kills: list[Kill],
) -> dict[str, Any]:
    acknowledged = {job.id: job for job in pushed if job.id is not None}
    completed = {run.job_id for run in runs if run.outcome == "ok"}
    failed_tags = {tag for tag, _, _ in failed}
    lost = [
        job
        for job_id, job in acknowledged.items()
        if job_id not in completed and job.tag not in failed_tags
    ]
    by_job: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        by_job[run.job_id].append(run)
    repeats = {job: find_repeats(job_runs, kills) for job, job_runs in by_job.items()}
    repeated = [job for job, found in repeats.items() if found]
    unexplained = [
        job for job, found in repeats.items() if any(not r.explained for r in found)
    ]
    waits = delays(pushed, runs)
    beyond = waits_beyond_backlog(pushed, runs)
    not_doomed = [(tag, kind, why) for tag, kind, why in failed if kind != "Doomed"]
    # By tag, since failed_jobs does not keep the job id; a tag pushed twice
    # (see unacknowledged_jobs) may fail twice and call failed() twice.
    failures = Counter(tag for tag, _, _ in failed)
    hookless = [tag for tag, count in failures.items() if hook_calls[tag] < count]
    runs_by_tag: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        runs_by_tag[run.tag].append(run)
    completed_tags = {acknowledged[j].tag for j in completed if j in acknowledged}
    return {
        "pushed": len(acknowledged),
        "completed": len(completed & acknowledged.keys()),
        "failed": len(failed),
        "lost": len(lost),
        "duplicated": len(repeated),
        "duplicated_unexplained": len(unexplained),
        "worst_delay_s": round(max(waits), 2) if waits else None,
        "delay_p50_s": round(statistics.median(waits), 2) if waits else None,
        "delay_p99_s": round(_percentile(waits, 0.99), 2) if waits else None,
        "early_starts": sum(1 for wait in waits if wait < 0),
        "worst_delay_beyond_backlog_s": round(max(beyond), 2) if beyond else None,
        "doomed_pushed": sum(1 for j in acknowledged.values() if j.kind == "Doomed"),
        "failed_not_doomed": len(not_doomed),
        "completed_and_failed": len(completed_tags & failed_tags),
        # failed() must run once for each job that failed for good.
        "failed_hook_missing": len(hookless),
        "failed_hook_missing_unexplained": sum(
            1 for tag in hookless if not _last_worker_killed(runs_by_tag[tag], kills)
        ),
        "failed_hook_repeated": sum(
            1 for tag, calls in hook_calls.items() if calls > failures[tag]
        ),
        "push_failures": sum(1 for job in pushed if job.id is None),
        "unacknowledged_jobs": len(by_job.keys() - acknowledged.keys()),
        "runs": len(runs),
        "_lost": [asdict(job) for job in lost],
        "_repeats": [_describe_repeat(r) for job in repeated for r in repeats[job]],
        "_failed_not_doomed": not_doomed,
        "_failed_hook_missing": hookless,
        "_kills": [asdict(kill) for kill in kills],
    }


def _last_worker_killed(runs: list[Run], kills: list[Kill]) -> bool:
    """Whether the worker of the last run was SIGKILLed after it started: it
    may have died between moving the job to failed_jobs and calling its
    failed() hook."""
    if not runs:
        return False
    last = max(runs, key=lambda run: run.started_at)
    return any(k.pid == last.worker_pid and k.at >= last.started_at for k in kills)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _describe_repeat(repeat: Repeat) -> str:
    run, before = repeat.run, repeat.earlier
    text = (
        f"job {run.job_id} ({run.kind}) attempt {run.attempt} by worker "
        f"{run.worker_pid} at {run.started_at:.3f}: {repeat.reason}"
    )
    if before is not None:
        text += (
            f"; earlier attempt {before.attempt} by worker {before.worker_pid} "
            f"at {before.started_at:.3f}, outcome {before.outcome}"
        )
    return text + ("" if repeat.explained else " [UNEXPLAINED]")


def scan_logs(folder: Path) -> dict[str, int]:
    """How many lines of the workers' logs match each of LOG_PATTERNS; the
    pool's harmless tracebacks are not counted as tracebacks."""
    counts = dict.fromkeys(LOG_PATTERNS, 0)
    for log in sorted(folder.glob("*.log")):
        previous = ""
        for line in log.read_text(errors="replace").splitlines():
            for key, pattern in LOG_PATTERNS.items():
                if key == "cli_errors":
                    counts[key] += line.startswith(pattern)
                else:
                    counts[key] += pattern in line
            if "Traceback" in line and LOG_PATTERNS["pool_reset_errors"] in previous:
                counts["tracebacks"] -= 1
            previous = line
    return counts


# -- the report -------------------------------------------------------------------


def report(
    figures: dict[str, Any], options: Options, folder: Path, logs: dict[str, int]
) -> None:
    details = {key: figures.pop(key) for key in list(figures) if key.startswith("_")}
    for lost in details["_lost"][:20]:
        say(f"LOST: {lost}")
    for line in details["_repeats"][:50]:
        say(f"repeat: {line}")
    for tag, kind, why in details["_failed_not_doomed"][:20]:
        say(f"failed, not doomed: {tag} {kind}: {why}")
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print(f"{'worker_log':<{width}}  {logs}")
    if options.json:
        print(json.dumps({**figures, "worker_log": logs}))
    with (folder / "report.json").open("w") as file:
        json.dump({**figures, **details, "worker_log": logs}, file, indent=1)


def run_campaign(
    options: Options, folder: Path, database: Database, url: str
) -> dict[str, Any]:
    """Set up, run the campaign, and return its figures."""
    started = time.monotonic()
    subject = subject_url(url)
    app = make_app(folder, subject)
    database.reset(subject)
    specs = plan_jobs(options.jobs, random.Random(options.seed))
    campaign = Campaign(options, app, database, subject)
    producers = start_producers(
        subject, specs, folder, options.push_seconds, options.seed
    )
    try:
        campaign.run(producers)
    finally:
        for process, _ in producers:
            if process.is_alive():  # the campaign gave up, or was interrupted
                process.terminate()
            process.join()
    pushed, push_retries = read_pushed([out for _, out in producers])
    faults = campaign.faults
    figures = analyse(
        pushed,
        read_runs(database),
        read_failed(database),
        read_hook_calls(database),
        faults.kills,
    )
    figures.update(
        {
            "left_in_queue": database.scalar("SELECT COUNT(*) FROM jobs"),
            # Rows of workers that are all gone: a worker that died without
            # deregistering (SIGKILL leaves one; a clean stop must not).
            "worker_rows_left": database.scalar("SELECT COUNT(*) FROM job_workers"),
            "timed_out": campaign.timed_out,
            "producer_failures": sum(p.exitcode != 0 for p, _ in producers),
            "push_retries": push_retries,
            "kills": len(faults.kills),
            "terms": faults.terms,
            "connection_kills": faults.connection_kills,
            "connection_kill_rounds": faults.connection_kill_rounds,
            "server_restarts": faults.server_restarts,
            "server_downtime_s": faults.server_downtime_s,
            "worker_incidents": {
                kind: len(lines) for kind, lines in faults.worker_incidents.items()
            },
            "_worker_incidents": faults.worker_incidents,
            "workers_started": campaign.fleet.started,
            "seconds": round(time.monotonic() - started, 1),
            "database": database.family,
            "url": database.describe(),
            "jobs": options.jobs,
            "prefetch": options.prefetch,
            "seed": options.seed,
        }
    )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    folder = Path(tempfile.mkdtemp(prefix="conveyor-chaos-"))
    url = options.database or f"sqlite:///{folder / 'chaos.db'}"
    database = Database(url)
    if options.restart_server and database.is_server and not is_local(database.url):
        say("--restart-server restarts a local server only")
        return 2
    say(
        f"{options.jobs} jobs, {options.workers} workers on {database.describe()}; "
        f"seed {options.seed}; folder {folder}"
    )
    try:
        figures = run_campaign(options, folder, database, url)
    finally:
        database.ensure_running()
    logs = scan_logs(folder / "app" / "logs")
    failed = figures["lost"] > 0 or figures["duplicated_unexplained"] > 0
    report(figures, options, folder, logs)
    # Anything worth a look keeps the logs: a job failed that was not
    # doomed (e.g. as poison), or a worker that ended unasked.
    worth_a_look = figures["worker_incidents"] or figures["failed_not_doomed"]
    if failed or options.keep or worth_a_look:
        say(f"logs and report.json kept in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

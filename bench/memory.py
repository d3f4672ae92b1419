"""Benchmark: does a worker's memory level off over a long run, and does
``--memory`` stop it?

What it measures
    The resident memory (``VmRSS`` in ``/proc/PID/status``) of one worker,
    ``conveyor queue work --stop-when-empty --sleep=0`` run as a subprocess
    exactly as an operator would start it, and of the child process that runs
    its jobs, while it drains N no-op jobs (50,000 by default) pushed with
    ``Queue.bulk``. A sampler reads both every half second together with the
    number of jobs still in the jobs table, and the report gives the figures
    after 1,000 jobs, at 10, 25, 50, 75 and 100 %, the largest seen, and the
    growth from 10 % to 100 %. The first 10 % are left out of the growth on
    purpose: caches (SQLAlchemy's compiled statements, the driver's prepared
    statements, the allocator's arenas) fill during them, and what matters is
    whether memory keeps climbing afterwards. Growth of at most 5 % counts as
    levelling off.

    A second, short scenario checks ``--memory=100``: jobs that each keep 5 MB
    more in a module-level list, as a leaking job would, run under a worker
    with that limit. It passes when the worker stops between jobs once the
    child passed the limit (a log line, exit code 0), the job that passed it
    completed, and every later job is still waiting in the jobs table.

How to run it
    python bench/memory.py                   # SQLite file in a temp folder
    python bench/memory.py --database postgresql://postgres@127.0.0.1:5432/test
    python bench/memory.py --database mysql://root@127.0.0.1:3306/test
    python bench/memory.py --jobs 5000 --json

    A server database gets a scratch schema (PostgreSQL) or database
    (MySQL/MariaDB) that is dropped afterwards, so rows left by anyone else
    are neither run nor counted. The application folder (``conveyor.toml``
    and ``jobs/``) is generated in a temp folder. Progress goes to standard
    error; ``--json`` prints one JSON object with every figure as the last
    line of standard output. The exit code is 1 when a worker failed, jobs
    were lost, or the ``--memory`` check did not pass.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from conveyor import Queue
from conveyor.config import load_settings
from conveyor.db import parse_url

T = TypeVar("T")

DEFAULT_JOBS = 50_000
PUSH_CHUNK = 1_000
SAMPLE_SECONDS = 0.5
#: The "start" figure: after this many jobs the child has imported what its
#: jobs need and both processes have run every code path once.
START_AFTER = 1_000
MILESTONES = (10, 25, 50, 75, 100)
#: Growth from 10 % to 100 % up to this many percent counts as levelling off.
LEVEL_PERCENT = 5.0
#: Long enough for a few samples of the finished state (see ``Settle``).
SETTLE_SECONDS = 1.5

MEMORY_LIMIT_MB = 100
HOG_MB = 5
#: Enough hog jobs to pass the limit from any plausible starting size.
HOG_JOBS = 40
HOG_TIMEOUT_SECONDS = 300
#: How long a database that went away may stay away before the run gives up.
OUTAGE_SECONDS = 180

JOB_MODULE = '''\
"""Jobs of the memory benchmark, written by bench/memory.py."""

import re
import resource
import time

# What Hog keeps alive between runs, as a job with a leak would.
_kept = []


class Noop:
    def handle(self, data):
        pass


class Settle:
    """Pushed last: keeps the worker busy for a moment once every no-op job is
    done, so the sampler sees the finished state before the worker exits."""

    def handle(self, data):
        time.sleep(data["seconds"])


class Hog:
    def handle(self, data):
        # Multiplying fills the pages; a zeroed buffer would not be resident.
        _kept.append(b"\\x01" * (data["mb"] * 1024 * 1024))
        # What the worker compares with --memory (ru_maxrss), and what this
        # process really holds (VmRSS), both in kB.
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open("/proc/self/status", encoding="ascii") as status:
            rss_kb = re.search(r"VmRSS:\\s+(\\d+)", status.read()).group(1)
        with open(data["log"], "a", encoding="utf-8") as log:
            log.write(f"{self.context.id} {peak_kb} {rss_kb}\\n")
'''


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- where the jobs go ------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An empty place for the queue's tables, and the URL that reaches it."""

    family: str
    url: str


def family_of_url(url: str) -> str:
    backend = parse_url(url).get_backend_name()
    return "mysql" if backend == "mariadb" else backend


def admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(
        parse_url(url), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )


def render(url: sa.URL) -> str:
    return url.render_as_string(hide_password=False)


@contextmanager
def scratch_target(database: str | None, workdir: Path) -> Iterator[Target]:
    """A fresh SQLite file, PostgreSQL schema or MySQL database, removed when
    the block ends."""
    if database is None:
        yield Target("sqlite", f"sqlite:///{workdir / 'queue.db'}")
        return

    family = family_of_url(database)
    name = f"conveyor_membench_{uuid.uuid4().hex[:10]}"
    engine = admin_engine(database)
    base = sa.make_url(database)
    if family == "postgresql":
        create, drop = f'CREATE SCHEMA "{name}"', f'DROP SCHEMA "{name}" CASCADE'
        # Every connection of the worker and its child lands in the schema.
        own = base.update_query_dict({"options": f"-csearch_path={name}"})
    elif family == "mysql":
        create, drop = f"CREATE DATABASE `{name}`", f"DROP DATABASE `{name}`"
        own = base.set(database=name)
    else:
        raise SystemExit(f"--database: unsupported database {family!r}")

    with engine.connect() as connection:
        connection.exec_driver_sql(create)
    try:
        yield Target(family, render(own))
    finally:
        try:
            retrying(lambda: drop_scratch(engine, drop))
        except sa.exc.DBAPIError:
            log(f"could not drop {name}; drop it by hand")
        engine.dispose()


def drop_scratch(engine: sa.Engine, statement: str) -> None:
    with engine.connect() as connection:
        connection.exec_driver_sql(statement)


def write_app(folder: Path, url: str) -> None:
    """``conveyor.toml`` naming the database, and ``jobs/`` with the jobs."""
    (folder / "jobs").mkdir(parents=True)
    (folder / "jobs" / "bench_jobs.py").write_text(JOB_MODULE, encoding="utf-8")
    # A JSON string of an ASCII URL is also a valid TOML string.
    (folder / "conveyor.toml").write_text(
        f'database_url = {json.dumps(url)}\njobs = "jobs"\n', encoding="utf-8"
    )


def open_queue(app: Path) -> Queue:
    settings = load_settings(config_path=app / "conveyor.toml", environ={})
    return Queue(settings=settings)


# -- counting rows ------------------------------------------------------------------


class Counter:
    """Counts the queue's rows from outside the worker.

    Autocommit, so every count sees the latest commit (MySQL's repeatable
    read would otherwise keep showing the first snapshot) and no read
    transaction stays open to hold up SQLite's checkpoints.
    """

    def __init__(self, url: str) -> None:
        # Pre-ping: a server restarted under the benchmark leaves dead
        # connections in the pool, which would fail the next count.
        self.engine = sa.create_engine(
            parse_url(url), isolation_level="AUTOCOMMIT", pool_pre_ping=True
        )

    def scalar(self, sql: str) -> int:
        return retrying(lambda: self._scalar_once(sql))

    def _scalar_once(self, sql: str) -> int:
        with self.engine.connect() as connection:
            return int(connection.exec_driver_sql(sql).scalar_one())

    def waiting(self) -> int:
        return self.scalar("SELECT COUNT(*) FROM jobs")

    def waiting_now(self) -> int | None:
        """The count, or ``None`` while the database cannot be reached; the
        sampler then goes on, as the worker itself does."""
        try:
            return self._scalar_once("SELECT COUNT(*) FROM jobs")
        except sa.exc.DBAPIError:
            return None

    def reserved(self) -> int:
        return self.scalar("SELECT COUNT(*) FROM jobs WHERE reserved_at IS NOT NULL")

    def failed(self) -> int:
        return self.scalar("SELECT COUNT(*) FROM failed_jobs")

    def waiting_ids(self) -> set[int]:
        def read() -> set[int]:
            with self.engine.connect() as connection:
                rows = connection.exec_driver_sql("SELECT id FROM jobs").all()
            return {int(row[0]) for row in rows}

        return retrying(read)

    def close(self) -> None:
        self.engine.dispose()


def retrying(action: Callable[[], T], seconds: float = OUTAGE_SECONDS) -> T:
    """``action()``, tried again while the database is unreachable (the shared
    servers may be restarted by others), for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action()
        except sa.exc.DBAPIError as exc:
            if time.monotonic() > deadline:
                raise
            log(f"  database unreachable ({type(exc.orig).__name__}); retrying")
            time.sleep(2)


# -- reading /proc -------------------------------------------------------------------


def rss_kb(pid: int) -> int | None:
    """Resident memory of ``pid`` in kB; ``None`` once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    # A zombie has no VmRSS line any more.
    return int(match.group(1)) if match else None


def children_of(pid: int) -> list[int]:
    """The child processes of ``pid``.

    ``/proc/PID/task/TID/children`` answers directly, but only on kernels
    built with CONFIG_PROC_CHILDREN; elsewhere every process's parent is read.
    """
    found: list[int] = []
    readable = False
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(part) for part in path.read_text().split()]
            readable = True
        except OSError:
            continue
    return found if readable else _children_by_scan(pid)


def _children_by_scan(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields after the
        # last ")" are plain: state, then the parent's pid.
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


# -- the drain -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    seconds: float
    done: int
    worker_kb: int
    child_kb: int | None


@dataclass(frozen=True)
class Point:
    """The first sample at or past a number of jobs done."""

    label: str
    done: int
    worker_mb: float
    child_mb: float | None


@dataclass(frozen=True)
class Growth:
    mb: float
    percent: float


@dataclass
class DrainResult:
    jobs: int
    push_seconds: float
    drain_seconds: float
    exit_code: int
    samples: list[Sample]
    points: list[Point] = field(default_factory=list)
    max_worker_mb: float = 0.0
    max_child_mb: float = 0.0
    worker_growth: Growth | None = None
    child_growth: Growth | None = None
    #: Samples without a count because the database was unreachable.
    unreachable_samples: int = 0
    left_waiting: int = 0
    failed: int = 0
    stop_line: str = ""

    @property
    def levels_off(self) -> bool:
        growths = [self.worker_growth, self.child_growth]
        return all(g is not None and g.percent <= LEVEL_PERCENT for g in growths)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.left_waiting == 0 and self.failed == 0


def conveyor_command() -> str:
    """The ``conveyor`` script installed beside this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("conveyor")
    found = str(beside) if beside.exists() else shutil.which("conveyor")
    if found is None:
        raise SystemExit("'conveyor' is not installed: pip install -e .")
    return found


def start_worker(app: Path, log_path: Path, *options: str) -> subprocess.Popen[bytes]:
    environment = dict(os.environ)
    # conveyor.toml must decide the database, not the caller's environment.
    environment.pop("CONVEYOR_DATABASE_URL", None)
    with log_path.open("ab") as output:
        return subprocess.Popen(
            [conveyor_command(), "queue", "work", "--stop-when-empty", "--sleep=0"]
            + list(options),
            cwd=app,
            env=environment,
            stdin=subprocess.DEVNULL,
            # A file, not a pipe: nobody would read 50,000 log lines from a
            # pipe while sampling, and a full pipe would stall the worker.
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def stopped_on_error(
    worker: subprocess.Popen[bytes],
) -> Iterator[subprocess.Popen[bytes]]:
    """The worker, killed if the benchmark fails while it runs, so no worker
    outlives the run and goes on draining someone's database."""
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def push_noops(queue: Queue, jobs: int) -> float:
    """Push ``jobs`` no-op jobs and the closing ``Settle``; seconds taken."""
    started = time.perf_counter()
    for first in range(0, jobs, PUSH_CHUNK):
        size = min(PUSH_CHUNK, jobs - first)
        # Not retried: a push whose commit was cut off may or may not have
        # landed, and a guess would skew every count after it.
        queue.bulk("Noop", [{} for _ in range(size)])
        if first // PUSH_CHUNK % 10 == 9:
            log(f"  pushed {first + size:,}")
    queue.push("Settle", {"seconds": SETTLE_SECONDS})
    return time.perf_counter() - started


def sample_until_exit(
    worker: subprocess.Popen[bytes], counter: Counter, jobs: int, interval: float
) -> tuple[list[Sample], int]:
    """Sample the worker, its child and the jobs left until the worker exits;
    also how many counts failed because the database was unreachable."""
    samples: list[Sample] = []
    started = time.monotonic()
    last_report = done = unreachable = 0
    while worker.poll() is None:
        worker_kb = rss_kb(worker.pid)
        children = children_of(worker.pid)
        child_kb = rss_kb(children[0]) if children else None
        waiting = counter.waiting_now()
        if waiting is None:
            unreachable += 1
            if unreachable % 20 == 1:
                log("  database unreachable; sampling goes on")
            time.sleep(interval)
            continue
        # ``Settle`` is one row more than the no-op jobs, so one row left
        # means every no-op job is done.
        done = min(jobs, jobs + 1 - waiting)
        if worker_kb is not None:
            samples.append(
                Sample(time.monotonic() - started, done, worker_kb, child_kb)
            )
        if done - last_report >= jobs // 10:
            last_report = done
            log(f"  {done:,} done, worker {mb(worker_kb)} MB, child {mb(child_kb)} MB")
        time.sleep(interval)
    return samples, unreachable


def mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def point_at(samples: Sequence[Sample], label: str, done: int) -> Point | None:
    for sample in samples:
        if sample.done >= done and sample.child_kb is not None:
            return Point(
                label, sample.done, mb(sample.worker_kb) or 0.0, mb(sample.child_kb)
            )
    return None


def growth(before: float | None, after: float | None) -> Growth | None:
    if before is None or after is None or before == 0:
        return None
    return Growth(round(after - before, 1), round((after - before) / before * 100, 1))


def summarise(result: DrainResult) -> None:
    """Fill in the report's points, maxima and growth from the samples."""
    samples, jobs = result.samples, result.jobs
    start = min(START_AFTER, max(1, jobs // 10))
    wanted = [(f"start ({start:,})", start)] + [
        (f"{p} %", math.ceil(jobs * p / 100)) for p in MILESTONES
    ]
    result.points = [
        p for label, done in wanted if (p := point_at(samples, label, done)) is not None
    ]
    result.max_worker_mb = mb(max(s.worker_kb for s in samples)) or 0.0
    result.max_child_mb = mb(max(s.child_kb or 0 for s in samples)) or 0.0

    by_label = {p.label: p for p in result.points}
    first, last = by_label.get("10 %"), by_label.get("100 %")
    if first is not None and last is not None:
        result.worker_growth = growth(first.worker_mb, last.worker_mb)
        result.child_growth = growth(first.child_mb, last.child_mb)


def stop_line(log_path: Path) -> str:
    """The worker's last ``worker stopped`` line, without its time stamp."""
    lines = [
        line
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        if "worker stopped" in line
    ]
    if not lines:
        return ""
    return lines[-1][lines[-1].index("worker stopped") :]


def drain(target: Target, app: Path, jobs: int, interval: float) -> DrainResult:
    """Push ``jobs`` no-op jobs, run one worker until the queue is empty and
    sample its memory and its child's."""
    queue = open_queue(app)
    counter = Counter(target.url)
    try:
        log(f"{target.family}: pushing {jobs:,} no-op jobs")
        push_seconds = push_noops(queue, jobs)
        log(f"  pushed in {push_seconds:.1f} s; starting one worker")

        log_path = app / "drain-worker.log"
        started = time.perf_counter()
        with stopped_on_error(start_worker(app, log_path)) as worker:
            samples, unreachable = sample_until_exit(worker, counter, jobs, interval)
            exit_code = worker.wait()
        drain_seconds = time.perf_counter() - started

        result = DrainResult(
            jobs=jobs,
            push_seconds=round(push_seconds, 2),
            drain_seconds=round(drain_seconds, 2),
            exit_code=exit_code,
            samples=samples,
            unreachable_samples=unreachable,
            left_waiting=counter.waiting(),
            failed=counter.failed(),
            stop_line=stop_line(log_path),
        )
    finally:
        queue.close()
        counter.close()
    if not result.ok:
        log(tail(log_path))
    if samples:
        summarise(result)
    return result


def tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


# -- the --memory check ------------------------------------------------------------


@dataclass(frozen=True)
class HogRun:
    """One hog job that ran, as it reported itself right after allocating."""

    job_id: int
    #: ``ru_maxrss``: the figure the worker compares with ``--memory``.
    peak_kb: int
    #: ``VmRSS``: what the child process really held.
    rss_kb: int


@dataclass
class LimitCheck:
    limit_mb: int
    pushed: int
    exit_code: int
    stop_line: str
    ran: list[HogRun]
    left_waiting: int
    left_reserved: int
    failed: int
    waiting_ids: set[int]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_memory_limit(target: Target, app: Path, limit_mb: int) -> LimitCheck:
    """Run hog jobs under ``--memory=limit_mb`` and judge how the worker
    stopped."""
    hog_log = app / "hog.log"
    log_path = app / "memory-worker.log"
    queue = open_queue(app)
    counter = Counter(target.url)
    try:
        # The drain leaves the tables empty; anything failed before is not ours.
        failed_before = counter.failed()
        queue.bulk("Hog", [{"mb": HOG_MB, "log": str(hog_log)}] * HOG_JOBS)
        log(
            f"{target.family}: {HOG_JOBS} jobs keeping {HOG_MB} MB each, "
            f"--memory={limit_mb}"
        )
        with stopped_on_error(
            start_worker(app, log_path, f"--memory={limit_mb}")
        ) as worker:
            exit_code = run_to_end(worker)
        check = LimitCheck(
            limit_mb=limit_mb,
            pushed=HOG_JOBS,
            exit_code=exit_code,
            stop_line=stop_line(log_path),
            ran=read_hog_log(hog_log),
            left_waiting=counter.waiting(),
            left_reserved=counter.reserved(),
            failed=counter.failed() - failed_before,
            waiting_ids=counter.waiting_ids(),
        )
    finally:
        queue.close()
        counter.close()
    check.problems = limit_problems(check)
    check.notes = measure_notes(check)
    if check.problems:
        log(tail(log_path))
    return check


def run_to_end(worker: subprocess.Popen[bytes]) -> int:
    """The worker's exit code; a worker that never stops is killed (and the
    check then fails on its exit code)."""
    try:
        return worker.wait(timeout=HOG_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()
        return worker.wait()


def read_hog_log(path: Path) -> list[HogRun]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [HogRun(*(int(part) for part in line.split())) for line in lines]


def limit_problems(check: LimitCheck) -> list[str]:
    """What went wrong, judged by the worker's own measure; empty: a pass."""
    problems = []
    limit_kb = check.limit_mb * 1024
    expected_waiting = check.pushed - len(check.ran)
    if check.exit_code != 0:
        problems.append(f"the worker exited with {check.exit_code}")
    if f"--memory={check.limit_mb}" not in check.stop_line:
        problems.append(f"no stop line naming --memory: {check.stop_line!r}")
    if not 0 < len(check.ran) < check.pushed:
        problems.append(f"{len(check.ran)} of {check.pushed} jobs ran: no early stop")
    if check.ran and check.ran[-1].peak_kb <= limit_kb:
        problems.append("the last job run had not passed the limit")
    if any(run.peak_kb > limit_kb for run in check.ran[:-1]):
        problems.append("the worker went on after a job passed the limit")
    # No job lost: each one either ran to completion (and left the table) or
    # is still waiting, untouched.
    if check.left_waiting != expected_waiting:
        problems.append(f"{check.left_waiting} jobs waiting, not {expected_waiting}")
    if {run.job_id for run in check.ran} & check.waiting_ids:
        problems.append("a job that ran is still in the jobs table")
    if check.left_reserved or check.failed:
        problems.append(f"{check.left_reserved} left reserved, {check.failed} failed")
    return problems


def measure_notes(check: LimitCheck) -> list[str]:
    """Where the worker's measure and the child's real size disagree.

    Linux keeps ``ru_maxrss`` across ``execve``, so a child the worker
    spawned starts with the worker's own peak as its "maximum"; a limit below
    the worker's size would then stop the worker after every job.
    """
    if not check.ran:
        return []
    first = check.ran[0]
    if first.peak_kb - first.rss_kb <= HOG_MB * 1024:
        return []
    return [
        f"after job #{first.job_id} the worker's measure (ru_maxrss) was "
        f"{first.peak_kb / 1024:.1f} MB while the child held "
        f"{first.rss_kb / 1024:.1f} MB (VmRSS): ru_maxrss survives exec, so the "
        "child inherits the worker's peak"
    ]


# -- reporting -----------------------------------------------------------------------


def show(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def show_growth(g: Growth | None) -> str:
    return "-" if g is None else f"{g.mb:+.1f} MB ({g.percent:+.1f} %)"


def print_drain(family: str, result: DrainResult) -> None:
    rate = result.jobs / result.drain_seconds if result.drain_seconds else 0.0
    print(
        f"\n{family}: {result.jobs:,} no-op jobs, one worker "
        f"(push {result.push_seconds:.1f} s, drain {result.drain_seconds:.1f} s, "
        f"{rate:,.0f} jobs/s, {len(result.samples)} samples)"
    )
    print(f"{'point':<16}{'jobs done':>11}{'worker MB':>12}{'child MB':>12}")
    for p in result.points:
        print(
            f"{p.label:<16}{p.done:>11,}{show(p.worker_mb):>12}{show(p.child_mb):>12}"
        )
    print(
        f"{'max':<16}{'':>11}{result.max_worker_mb:>12.1f}{result.max_child_mb:>12.1f}"
    )
    print(
        f"growth 10 % -> 100 %: worker {show_growth(result.worker_growth)}, "
        f"child {show_growth(result.child_growth)}"
    )
    if result.unreachable_samples:
        print(
            f"note: the database was unreachable for "
            f"{result.unreachable_samples} samples (restarted by someone else?)"
        )
    verdict = "levels off" if result.levels_off else "DOES NOT level off"
    print(f"memory {verdict} (threshold {LEVEL_PERCENT:g} % growth)")
    print(
        f"worker exit code {result.exit_code}, {result.left_waiting} jobs left, "
        f"{result.failed} failed; {result.stop_line}"
    )


def print_limit(check: LimitCheck) -> None:
    last = check.ran[-1] if check.ran else None
    passed = (
        f"job #{last.job_id} took it to {last.peak_kb / 1024:.1f} MB"
        if last is not None
        else "no job ran"
    )
    print(
        f"\n--memory={check.limit_mb}: {len(check.ran)} of {check.pushed} jobs ran "
        f"({passed}), exit code {check.exit_code}, {check.left_waiting} waiting, "
        f"{check.left_reserved} reserved, {check.failed} failed"
    )
    print(f"  {check.stop_line or 'no stop line'}")
    for note in check.notes:
        print(f"  note: {note}")
    print("  PASS" if check.ok else "  FAIL: " + "; ".join(check.problems))


def as_json(family: str, result: DrainResult, check: LimitCheck | None) -> str:
    drain_figures = asdict(result)
    drain_figures.pop("samples")
    drain_figures["levels_off"] = result.levels_off
    drain_figures["sample_count"] = len(result.samples)
    limit = None
    if check is not None:
        limit = asdict(check)
        limit.pop("waiting_ids")
        limit["ok"] = check.ok
    return json.dumps({"database": family, "drain": drain_figures, "memory": limit})


# -- command line --------------------------------------------------------------------


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give 1 or more")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Worker memory over a long run, and the --memory limit."
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="postgresql:// or mysql:// server to use (a scratch schema or "
        "database in it); default: a SQLite file in a temp folder",
    )
    parser.add_argument("--jobs", type=positive, default=DEFAULT_JOBS)
    parser.add_argument(
        "--interval", type=float, default=SAMPLE_SECONDS, help="seconds between samples"
    )
    parser.add_argument(
        "--memory-limit",
        type=positive,
        default=MEMORY_LIMIT_MB,
        metavar="MB",
        help="the --memory the second scenario runs with",
    )
    parser.add_argument(
        "--skip-limit-check", action="store_true", help="only the long drain"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="conveyor-membench-") as temp:
        workdir = Path(temp)
        with scratch_target(args.database, workdir) as target:
            app = workdir / "app"
            write_app(app, target.url)
            result = drain(target, app, args.jobs, args.interval)
            check = None
            if not args.skip_limit_check:
                check = check_memory_limit(target, app, args.memory_limit)

    print_drain(target.family, result)
    if check is not None:
        print_limit(check)
    if args.json:
        print(as_json(target.family, result, check))
    passed = result.ok and (check is None or check.ok)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

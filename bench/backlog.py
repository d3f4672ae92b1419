"""Benchmark: does a worker, ``queue status`` and the dashboard stay as fast
with 1,000,000 jobs queued as with 10,000?

What it measures, on SQLite, PostgreSQL and MariaDB
    - drain: the rate of 10,000 no-op jobs run by one worker process
      (``--prefetch=100``, as bench/queue.py) from a table holding only
      them, and the rate of the 10,000 at the head of a table holding
      1,000,000; timed between two marker jobs that stamp the time they
      run (bench/queue_common.py), so the worker's start-up is left out;
    - push: 10,000 jobs in bulk calls of 100 onto an empty table, the price
      every index of the jobs table adds to a push;
    - status: the wall time of ``conveyor queue status`` and ``queue status
      --json`` with the 1,000,000 queued (about 1 % of them delayed, some
      reserved, some of those with leases run out), start-up included, and
      of the query alone; the same command on an empty table shows what is
      start-up;
    - dashboard: the overview's counts and the jobs page's queries at
      1,000,000.

    The backlog is written by one set-based ``INSERT ... SELECT`` over a
    digits table (through SQLAlchemy Core, alike on every database), rows
    exactly as a push writes them: a no-op job's payload with a uuid of its
    own, due now, created now. The database then gets ``ANALYZE``, as its
    autovacuum or an operator would have done long before a backlog grew
    that large.

How to run it
    python bench/backlog.py                       # all three, ~10 minutes
    python bench/backlog.py --only sqlite --runs 1 --json
    python bench/backlog.py --explain             # also print query plans

    PostgreSQL and MariaDB come from ``--postgresql`` and ``--mysql`` (the
    local servers by default); each run works in a scratch schema or
    database that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa

from conveyor.dashboard import queries
from conveyor.drivers import tables
from conveyor.queue import inspection

_HERE = Path(__file__).resolve().parent


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", _HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


memory = _load("memory")  # scratch databases, the conveyor command
common = _load("queue_common")  # marker jobs, processes

warnings.filterwarnings("ignore", "SELECT statement has a cartesian product")

#: Share of the backlog that is delayed, and rows reserved, for ``status``.
DELAYED_SHARE = 0.01
RESERVED = 1000
EXPIRED = 100


# -- filling the table ---------------------------------------------------------------


def fill(
    connection: sa.Connection,
    jobs: sa.Table,
    count: int,
    *,
    due: int,
    reserved_at: int | None = None,
) -> None:
    """Insert ``count`` no-op jobs in one statement, as a push writes them;
    ``reserved_at`` makes them held by a worker named ``bench``."""
    if count <= 0:
        return
    places = len(str(count - 1))
    digits = sa.union_all(
        *(
            sa.select(sa.literal(d).label("n"), sa.literal(str(d)).label("c"))
            for d in range(10)
        )
    ).cte("digits")
    place = [digits.alias(f"d{i}") for i in range(places)]
    number = sum((place[i].c.n * 10**i for i in range(places)), sa.literal(0))
    # A uuid of its own per row: a random prefix per fill, the row's number
    # padded to the last group.
    uuid = sa.literal(f"{os.urandom(4).hex()}-0000-4000-8000-" + "0" * (12 - places))
    for i in reversed(range(places)):
        uuid = uuid + place[i].c.c
    payload = (
        sa.literal('{"uuid": "') + uuid + sa.literal('", "job": "Noop", "data": {}}')
    )
    columns: dict[str, Any] = {
        "queue": sa.literal("default"),
        "payload": payload,
        "attempts": sa.literal(0),
        "available_at": sa.literal(due),
        "created_at": sa.literal(int(time.time())),
        "crashes": sa.literal(0),
    }
    if reserved_at is not None:
        columns |= {
            "attempts": sa.literal(1),
            "reserved_at": sa.literal(reserved_at),
            "reservation": sa.literal("0" * 32),
            "reserved_by": sa.literal("bench"),
        }
    select = sa.select(*(value.label(name) for name, value in columns.items()))
    # The digits' cross product is the point: SQLAlchemy's warning is not.
    select = select.select_from(*place).where(number < count)
    connection.execute(sa.insert(jobs).from_select(list(columns), select))


def analyze(engine: sa.Engine, family: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql(
            {"sqlite": "ANALYZE", "postgresql": "VACUUM ANALYZE jobs"}.get(
                family, "ANALYZE TABLE jobs"
            )
        )


# -- one database --------------------------------------------------------------------


class Bench:
    def __init__(self, family: str, app: Path, workdir: Path, args: Any) -> None:
        self.family = family
        self.app = app
        self.workdir = workdir
        self.args = args
        self.queue = memory.open_queue(app)
        self.store = self.queue.store
        self.store.ensure_tables()
        self.jobs = self.store.tables.jobs
        self.first_claim = 0.0

    def clear(self) -> None:
        """Empty the table as if new: a DELETE of 1,000,000 rows would leave
        as many dead index entries (until VACUUM, or MariaDB's purge) for
        the next drain's first claims to step over, 0.3 s each."""
        with self.store.engine.begin() as connection:
            if self.family == "sqlite":
                connection.execute(sa.delete(self.jobs))
            else:
                connection.exec_driver_sql(f"TRUNCATE TABLE {self.jobs.name}")

    def push_bulk(self) -> float:
        self.clear()
        started = time.perf_counter()
        for first in range(0, self.args.jobs, common.BULK):
            size = min(common.BULK, self.args.jobs - first)
            self.queue.bulk("Noop", [{} for _ in range(size)])
        return self.args.jobs / (time.perf_counter() - started)

    def drain(self, behind: int) -> float | None:
        """The rate of the ``--jobs`` jobs at the head of the queue, with
        ``behind`` more queued after them."""
        self.clear()
        marks = self.workdir / f"marks-{time.monotonic_ns()}"
        self.queue.push("Mark", {"file": str(marks), "name": "first"})
        for first in range(0, self.args.jobs, 1000):
            size = min(1000, self.args.jobs - first)
            self.queue.bulk("Noop", [{} for _ in range(size)])
        self.queue.push("Mark", {"file": str(marks), "name": "last"})
        if behind:
            with self.store.engine.begin() as connection:
                fill(connection, self.jobs, behind, due=self.store.now())
            analyze(self.store.engine, self.family)
        self.first_claim = self.claim_seconds()
        worker = self.worker("--stop-when-empty", "--sleep=0")
        try:
            common.wait_for_mark(marks, "last", common.DRAIN_TIMEOUT)
        finally:
            common.stop(worker)
        return common.rate_between_marks(marks, self.args.jobs)

    def claim_seconds(self) -> float:
        """How long a worker's first claim of 100 takes: it looks for leases
        that ran out before it takes ready jobs. The jobs go back, uncounted."""
        queue = memory.open_queue(self.app)
        store = queue.store
        try:
            assert store.skip_locked is not None  # connected, as a worker is
            started = time.perf_counter()
            claimed = store.reserve_many("default", "", 100)
            seconds = time.perf_counter() - started
            store.release_unstarted(claimed)
        finally:
            queue.close()
        return seconds

    def worker(self, *options: str) -> subprocess.Popen[bytes]:
        command = [memory.conveyor_command(), "queue", "work", "--prefetch=100"]
        log = self.workdir / "worker.log"
        return common.start_process([*command, *options], self.app, log)

    def backlog_for_status(self) -> int:
        """Fill the table to ``--backlog`` jobs: ready, delayed, running and
        run out of lease; how many there are."""
        self.clear()
        now = self.store.now()
        delayed = int(self.args.backlog * DELAYED_SHARE)
        ready = self.args.backlog - delayed - RESERVED - EXPIRED
        expired_at = now - self.store.retry_after - 60
        with self.store.engine.begin() as connection:
            fill(connection, self.jobs, ready, due=now - 5)
            fill(connection, self.jobs, delayed, due=now + 3600)
            fill(connection, self.jobs, RESERVED, due=now - 5, reserved_at=now)
            fill(connection, self.jobs, EXPIRED, due=now - 5, reserved_at=expired_at)
        analyze(self.store.engine, self.family)
        with self.store.engine.connect() as connection:
            total = connection.execute(
                sa.select(sa.func.count()).select_from(self.jobs)
            )
            return int(total.scalar_one())

    def cli_seconds(self, *arguments: str) -> float:
        """Median wall time of a ``conveyor`` command, start-up included."""
        times = []
        for _ in range(self.args.repeat):
            started = time.perf_counter()
            subprocess.run(
                [memory.conveyor_command(), *arguments],
                cwd=self.app,
                env={
                    k: v for k, v in os.environ.items() if k != "CONVEYOR_DATABASE_URL"
                },
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    def query_seconds(self, query: Callable[[], Any]) -> float:
        times = []
        for _ in range(self.args.repeat):
            started = time.perf_counter()
            query()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    def upgrade_seconds(self) -> float | None:
        """How long the first process takes to give a full table of an
        earlier version the claim index (``None`` before it existed)."""
        upgrade = getattr(tables, "upgrade_indexes", None)
        if upgrade is None:
            return None
        name = self.jobs.name
        with self.store.engine.begin() as connection:
            for index in self.jobs.indexes:
                if index.name == tables.claim_index(name):
                    index.drop(connection)
            connection.exec_driver_sql(
                f"CREATE INDEX {tables.superseded_index(name)} "
                f"ON {name} (queue, reserved_at, id)"
            )
        started = time.perf_counter()
        with self.store.engine.begin() as connection:
            upgrade(connection, self.jobs)
        return time.perf_counter() - started

    def reads(self) -> dict[str, float]:
        """Seconds of each read of the status command and the dashboard."""
        store = self.store
        return {
            "status_cli": self.cli_seconds("queue", "status"),
            "status_json_cli": self.cli_seconds("queue", "status", "--json"),
            "status_query": self.query_seconds(lambda: inspection.queue_counts(store)),
            "jobs_page": self.query_seconds(lambda: queries.list_jobs(store)),
            "running_page": self.query_seconds(
                lambda: queries.list_jobs(store, states=("running",))
            ),
            "queue_names": self.query_seconds(lambda: queries.queue_names(store)),
        }


# -- query plans ---------------------------------------------------------------------


def explain(store: Any, family: str) -> None:
    """Print the plan of the claim, the expired-lease scan and the status
    query as the database would run them now."""
    jobs = store.tables.jobs
    now = store.now()
    # A store that never claimed looks for run-out leases first.
    claim_order = store._claim_order("default", now)
    statements: dict[str, Any] = {
        f"claim {name}": sa.select(jobs.c.id)
        .where(claimable.where)
        .order_by(*claimable.order)
        .limit(100)
        for name, claimable in zip(("expired", "ready"), claim_order, strict=True)
    }
    statements["status: queue names"] = (
        sa.select(jobs.c.queue).order_by(jobs.c.queue).limit(1)
    )
    statements["status: held"] = inspection.held_statement(store, "default", now)
    statements["status: waiting"] = inspection.waiting_statement(store, "default", now)
    prefix = {"sqlite": "EXPLAIN QUERY PLAN ", "postgresql": "EXPLAIN "}
    with store.engine.connect() as connection:
        for name, statement in statements.items():
            sql = str(
                statement.compile(connection, compile_kwargs={"literal_binds": True})
            )
            common.say(f"-- {family}: {name}\n{sql}")
            rows = connection.exec_driver_sql(prefix.get(family, "EXPLAIN ") + sql)
            for row in rows:
                common.say("   " + " | ".join(str(cell) for cell in row))


# -- running and reporting -----------------------------------------------------------


def measure(family: str, server: str | None, args: Any) -> dict[str, Any]:
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float | None) -> None:
        if value is not None:
            figures.setdefault(name, []).append(value)
            shown = f"{value:.3f}" if value < 100 else f"{value:,.0f}"
            common.say(f"  {family} {name}: {shown}")

    with tempfile.TemporaryDirectory(prefix="conveyor-backlog-") as folder:
        workdir = Path(folder)
        with memory.scratch_target(server, workdir) as target:
            app = workdir / "app"
            (app / "jobs").mkdir(parents=True)
            (app / "jobs" / "bench_jobs.py").write_text(
                common.CONVEYOR_JOBS, encoding="utf-8"
            )
            (app / "conveyor.toml").write_text(
                f'database_url = {json.dumps(target.url)}\njobs = "jobs"\n',
                encoding="utf-8",
            )
            bench = Bench(family, app, workdir, args)
            try:
                bench.clear()
                add("status_cli_empty", bench.cli_seconds("queue", "status"))
                for _ in range(args.runs):
                    add("push_bulk", bench.push_bulk())
                    add("drain_small", bench.drain(0))
                    add("claim_small", bench.first_claim)
                    add("drain_backlog", bench.drain(args.backlog - args.jobs - 2))
                    add("claim_backlog", bench.first_claim)
                add("backlog_rows", bench.backlog_for_status())
                add("index_upgrade", bench.upgrade_seconds())
                for name, seconds in bench.reads().items():
                    add(name, seconds)
                # Last: it takes the run-out leases back.
                add("claim_mixed", bench.claim_seconds())
                if args.explain:
                    explain(bench.store, family)
            finally:
                bench.queue.close()
    result: dict[str, Any] = {
        name: statistics.median(values) for name, values in figures.items()
    }
    small, big = result.get("drain_small"), result.get("drain_backlog")
    if small and big:
        result["drain_ratio"] = round(big / small, 3)
    return result


def print_table(summary: dict[str, dict[str, Any]]) -> None:
    rows = [["figure", *summary]]
    names = sorted({name for figures in summary.values() for name in figures})
    for name in names:
        cells = []
        for figures in summary.values():
            value = figures.get(name)
            if value is None:
                cells.append("-")
            elif name.startswith("claim_"):
                cells.append(f"{value * 1000:.1f} ms")
            elif name.endswith(
                ("_cli", "_empty", "_query", "_page", "_names", "_upgrade")
            ):
                cells.append(f"{value:.3f} s")
            elif name == "drain_ratio":
                cells.append(f"{value:.2f}")
            else:
                cells.append(common.show_value(value))
        rows.append([name, *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="see bench/backlog.py")
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per drain")
    parser.add_argument("--runs", type=int, default=2, help="drains of each kind")
    parser.add_argument("--repeat", type=int, default=3, help="timings per read")
    parser.add_argument("--only", default="sqlite,postgresql,mysql")
    parser.add_argument("--explain", action="store_true", help="print query plans")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument(
        "--postgresql", default="postgresql://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--mysql", default="mysql://root@127.0.0.1:3306/test")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    servers = {"sqlite": None, "postgresql": args.postgresql, "mysql": args.mysql}
    summary: dict[str, dict[str, Any]] = {}
    for family in args.only.split(","):
        if family not in servers:
            raise SystemExit(f"--only: unknown database {family!r}")
        common.say(f"{family}:")
        summary[family] = measure(family, servers[family], args)
    print(f"backlog {args.backlog:,} jobs, drains of {args.jobs:,}; rates in jobs/s")
    print_table(summary)
    if args.json:
        print(json.dumps({"load_average": os.getloadavg(), **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The queue benchmark itself; run it as ``python bench/queue.py``."""

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

_HERE = Path(__file__).resolve().parent


def _load(name: str) -> ModuleType:
    """A sibling module of this folder, loaded by path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", _HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


memory = _load("memory")  # scratch databases, worker processes, /proc
common = _load("queue_common")
peers = _load("queue_peers")

METRICS = common.METRICS

JOB_MODULE = common.CONVEYOR_JOBS


# -- Conveyor ----------------------------------------------------------------------


@dataclass
class ConveyorSystem:
    """Conveyor on one database, driven through its CLI as an operator
    would run it."""

    family: str
    server: str | None
    name: str = ""
    kind: str = "conveyor"

    def __post_init__(self) -> None:
        self.name = f"conveyor-{self.family}"

    @contextmanager
    def ready(self, workdir: Path) -> Iterator[ConveyorRun]:
        with memory.scratch_target(self.server, workdir) as target:
            app = workdir / "app"
            (app / "jobs").mkdir(parents=True)
            (app / "jobs" / "bench_jobs.py").write_text(JOB_MODULE, encoding="utf-8")
            (app / "conveyor.toml").write_text(
                f'database_url = {json.dumps(target.url)}\njobs = "jobs"\n',
                encoding="utf-8",
            )
            queue = memory.open_queue(app)
            queue.store.ensure_tables()
            try:
                yield ConveyorRun(app, target.url, queue, workdir)
            finally:
                queue.close()


@dataclass
class ConveyorRun:
    app: Path
    url: str
    queue: Any
    workdir: Path

    def clear(self) -> None:
        with self.queue.store.engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM jobs")

    def push_single(self, jobs: int) -> float:
        started = time.perf_counter()
        for _ in range(jobs):
            self.queue.push("Noop", {})
        rate = jobs / (time.perf_counter() - started)
        self.clear()
        return rate

    def push_bulk(self, jobs: int) -> float:
        started = time.perf_counter()
        for first in range(0, jobs, common.BULK):
            self.queue.bulk("Noop", [{} for _ in range(min(common.BULK, jobs - first))])
        rate = jobs / (time.perf_counter() - started)
        self.clear()
        return rate

    def drain(self, jobs: int, processes: int) -> float | None:
        marks = self.workdir / f"marks-{time.monotonic_ns()}"
        self.queue.push("Mark", {"file": str(marks), "name": "first"})
        for first in range(0, jobs, 1000):
            self.queue.bulk("Noop", [{} for _ in range(min(1000, jobs - first))])
        self.queue.push("Mark", {"file": str(marks), "name": "last"})
        # Several processes the way an operator runs them: one supervisor
        # (``--processes``) that exits once each of its workers found the
        # queue empty.
        options = ["--stop-when-empty", "--sleep=0"]
        if processes > 1:
            options.append(f"--processes={processes}")
        self._worker(*options).wait(timeout=common.DRAIN_TIMEOUT)
        return common.rate_between_marks(marks, jobs)

    def latency(self, samples: int) -> tuple[float, float] | None:
        seen = self.workdir / f"latency-{time.monotonic_ns()}"
        worker = self._worker()
        try:
            common.wait_idle(worker.pid)
            return common.measure_latency(
                lambda at: self.queue.push("Ping", {"file": str(seen), "at": at}),
                seen,
                samples,
            )
        finally:
            common.stop(worker)

    def idle_rss_mb(self) -> float | None:
        worker = self._worker()
        try:
            common.wait_idle(worker.pid)
            return common.tree_rss_mb(worker.pid)
        finally:
            common.stop(worker)

    def _worker(self, *options: str) -> subprocess.Popen[bytes]:
        # The figures of docs/performance.md are with 100 claimed ahead; the
        # default (50) drains as fast on PostgreSQL and MariaDB, and about a
        # third slower on SQLite.
        command = [
            memory.conveyor_command(),
            "queue",
            "work",
            "--prefetch=100",
            *options,
        ]
        return common.start_process(command, self.app, self.workdir / "worker.log")


# -- the raw ceiling ----------------------------------------------------------------


@dataclass
class RawSystem:
    """The driver alone on Conveyor's ``jobs`` table."""

    family: str
    server: str | None
    name: str = ""
    kind: str = "raw"

    def __post_init__(self) -> None:
        self.name = f"raw-{self.family}"

    @contextmanager
    def ready(self, workdir: Path) -> Iterator[Any]:
        with ExitStack() as stack:
            conveyor = stack.enter_context(
                ConveyorSystem(self.family, self.server).ready(workdir)
            )
            yield common.RawRun(self.family, conveyor.url)


# -- running and reporting ----------------------------------------------------------


@dataclass
class Plan:
    jobs: int
    push_jobs: int
    bulk_jobs: int
    samples: int
    runs: int
    two_processes: bool
    metrics: tuple[str, ...]


@dataclass
class Results:
    #: metric -> system -> one value per run
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, metric: str, system: str, value: float | None) -> None:
        if value is not None:
            self.values.setdefault(metric, {}).setdefault(system, []).append(value)

    def median(self, metric: str, system: str) -> float | None:
        found = self.values.get(metric, {}).get(system)
        return statistics.median(found) if found else None


def measure(system: Any, plan: Plan, results: Results) -> None:
    """One run of every metric on ``system``; a failure is noted, not fatal."""
    with tempfile.TemporaryDirectory(prefix="conveyor-qbench-") as folder:
        try:
            with system.ready(Path(folder)) as run:
                steps: list[tuple[str, Callable[[], Any]]] = [
                    ("push_single", lambda: run.push_single(plan.push_jobs)),
                    ("push_bulk", lambda: run.push_bulk(plan.bulk_jobs)),
                    ("drain_1proc", lambda: run.drain(plan.jobs, 1)),
                ]
                if plan.two_processes:
                    steps.append(("drain_2proc", lambda: run.drain(plan.jobs, 2)))
                if system.kind == "raw":
                    steps.append(
                        ("drain_claim100", lambda: run.drain_claim100(plan.jobs))
                    )
                steps += [
                    ("latency", lambda: run.latency(plan.samples)),
                    ("idle_rss_mb", lambda: run.idle_rss_mb()),
                ]
                for metric, step in steps:
                    if metric not in plan.metrics:
                        continue
                    common.settle()
                    value = step()
                    if metric == "latency":
                        if value is not None:
                            results.add("latency_p50_ms", system.name, value[0])
                            results.add("latency_p99_ms", system.name, value[1])
                    else:
                        results.add(metric, system.name, value)
                    common.say(f"  {system.name} {metric}: {common.show_value(value)}")
        except common.Unavailable as exc:
            results.notes[system.name] = str(exc)
            common.say(f"  {system.name}: skipped: {exc}")
        except Exception as exc:  # one system failing must not end the run
            results.notes[system.name] = f"failed: {type(exc).__name__}: {exc}"
            common.say(f"  {system.name}: failed: {type(exc).__name__}: {exc}")


def systems(args: argparse.Namespace) -> list[Any]:
    servers = {"sqlite": None, "postgresql": args.postgresql, "mysql": args.mysql}
    found: list[Any] = []
    for family, server in servers.items():
        found.append(ConveyorSystem(family, server))
        found.append(RawSystem(family, server))
    if not args.quick:
        found += peers.all_peers(redis_url=args.redis, postgresql=args.postgresql)
    if args.only:
        wanted = set(args.only.split(","))
        found = [system for system in found if system.name in wanted]
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Conveyor's queue beside its peers and the raw driver "
        "(see bench/queue.py)."
    )
    parser.add_argument("--quick", action="store_true", help="small, no peers")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("--jobs", type=int, help="jobs per drain (10,000)")
    parser.add_argument("--runs", type=int, help="interleaved runs (3)")
    parser.add_argument("--only", help="comma-separated system names")
    parser.add_argument(
        "--only-push",
        action="store_true",
        help="measure the two push rates alone (no drain, latency, memory)",
    )
    parser.add_argument(
        "--postgresql", default="postgresql://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--mysql", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        plan = Plan(
            jobs=args.jobs or 2000,
            push_jobs=300,
            bulk_jobs=2000,
            samples=5,
            runs=args.runs or 1,
            two_processes=False,
            metrics=("push_single", "push_bulk", "drain_1proc", "drain_claim100"),
        )
    else:
        jobs = args.jobs or 10_000
        plan = Plan(
            jobs=jobs,
            push_jobs=max(100, jobs // 5),
            bulk_jobs=jobs,
            samples=20,
            runs=args.runs or 3,
            two_processes=True,
            metrics=(*METRICS, "drain_claim100"),
        )
    if args.only_push:
        plan.metrics = ("push_single", "push_bulk")
    chosen = systems(args)
    results = Results()
    load_before = os.getloadavg()
    started = time.monotonic()
    for run in range(1, plan.runs + 1):
        common.say(f"run {run} of {plan.runs}")
        # Interleaved, and in a rotated order, so drift hits all alike.
        shift = (run - 1) % max(len(chosen), 1)
        for system in chosen[shift:] + chosen[:shift]:
            if system.name in results.notes:
                continue
            measure(system, plan, results)
    summary = common.summarise(results, chosen, plan.runs)
    summary["load_average"] = {"before": load_before, "after": os.getloadavg()}
    summary["seconds"] = round(time.monotonic() - started, 1)
    common.print_table(summary)
    if args.json:
        print(json.dumps(summary))
    return 0

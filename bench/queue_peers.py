"""The peers bench/queue.py measures Conveyor against, each through its own
public API and CLI, with the same three jobs (a no-op, a marker that stamps
the time it runs, a ping that writes how long ago it was pushed).

Each peer gets its own Redis database (flushed before every run) or its own
SQLite file or PostgreSQL schema. A peer that is not installed, or whose
server cannot be reached, raises ``Unavailable`` and is skipped."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

common = sys.modules["bench_queue_common"]

_TASKS_HEAD = '''\
"""Tasks of the queue benchmark, written by bench/queue_peers.py."""

import time


def _append(path, line):
    with open(path, "a", encoding="ascii") as out:
        out.write(line + "\\n")


def _noop():
    pass


def _mark(file, name):
    _append(file, f"{name} {time.time()!r}")


def _ping(file, at):
    _append(file, repr(time.time() - at))
'''

_TASKS = {
    "rq": """
noop, mark, ping = _noop, _mark, _ping
""",
    "celery": """
from celery import Celery

app = Celery("bench_tasks", broker={broker!r})
app.conf.worker_hijack_root_logger = False
noop = app.task(name="noop", ignore_result=True)(_noop)
mark = app.task(name="mark", ignore_result=True)(_mark)
ping = app.task(name="ping", ignore_result=True)(_ping)
""",
    "dramatiq": """
import dramatiq
from dramatiq.brokers.redis import RedisBroker

dramatiq.set_broker(RedisBroker(url={broker!r}))
noop = dramatiq.actor(_noop, actor_name="noop")
mark = dramatiq.actor(_mark, actor_name="mark")
ping = dramatiq.actor(_ping, actor_name="ping")
""",
    "huey-redis": """
from huey import RedisHuey

huey = RedisHuey("bench", url={broker!r})
noop, mark, ping = (huey.task()(f) for f in (_noop, _mark, _ping))
""",
    "huey-sqlite": """
from huey import SqliteHuey

huey = SqliteHuey("bench", filename={broker!r})
noop, mark, ping = (huey.task()(f) for f in (_noop, _mark, _ping))
""",
    "procrastinate": """
from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo={broker!r}))
noop = app.task(name="noop")(_noop)
mark = app.task(name="mark")(_mark)
ping = app.task(name="ping")(_ping)
""",
}


#: The arguments of each task, by name (procrastinate takes keywords only).
_ARGUMENTS = {"noop": (), "mark": ("file", "name"), "ping": ("file", "at")}


@dataclass
class Peer:
    """One peer at one setting."""

    name: str
    family: str  # which _TASKS
    requires: str
    #: The worker command with one process; ``{app}`` is the tasks module.
    one: list[str]
    #: With two processes; empty when the setting has no such form.
    two: list[str] = field(default_factory=list)
    broker: str = ""
    kind: str = "peer"

    @contextmanager
    def ready(self, workdir: Path) -> Iterator[PeerRun]:
        try:
            importlib.import_module(self.requires)
        except ImportError as exc:
            raise common.Unavailable(
                f"{self.requires} is not installed "
                "(pip install -r bench/requirements-queue.txt)"
            ) from exc
        broker = self.broker
        if self.family == "huey-sqlite":
            broker = str(workdir / "huey.db")
        with _scratch(self, broker) as broker_url:
            source = _TASKS_HEAD + _TASKS[self.family].format(broker=broker_url)
            (workdir / "bench_tasks.py").write_text(source, encoding="utf-8")
            if self.family == "procrastinate":
                subprocess.run(
                    [_script("procrastinate"), "--app=bench_tasks.app", "schema"]
                    + ["--apply"],
                    cwd=workdir,
                    env=_pythonpath(workdir),
                    check=True,
                    capture_output=True,
                )
            sys.path.insert(0, str(workdir))
            sys.modules.pop("bench_tasks", None)
            try:
                tasks = importlib.import_module("bench_tasks")
                run = PeerRun(self, tasks, workdir, broker_url)
                run.flush()
                yield run
            finally:
                sys.path.remove(str(workdir))
                sys.modules.pop("bench_tasks", None)


@contextmanager
def _scratch(peer: Peer, broker: str) -> Iterator[str]:
    """procrastinate gets a fresh schema; the others use ``broker`` as is."""
    if peer.family != "procrastinate":
        yield broker
        return
    import psycopg

    schema = f"qbench_{int(time.time() * 1000) % 10**9}"
    try:
        admin = psycopg.connect(broker, autocommit=True)
    except psycopg.Error as exc:
        raise common.Unavailable(f"PostgreSQL unreachable: {exc}") from exc
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{broker}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def _pythonpath(folder: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(folder)}


def _script(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise common.Unavailable(f"the {name} command is not installed")
    return found


@dataclass
class PeerRun:
    peer: Peer
    tasks: ModuleType
    workdir: Path
    broker: str

    # -- pushing -------------------------------------------------------------

    def flush(self) -> None:
        family = self.peer.family
        if family in ("rq", "celery", "dramatiq", "huey-redis"):
            import redis

            try:
                redis.Redis.from_url(self.broker).flushdb()
            except redis.RedisError as exc:
                raise common.Unavailable(f"Redis unreachable: {exc}") from exc
        elif family == "huey-sqlite":
            self.tasks.huey.flush()
        elif family == "procrastinate":
            self._procrastinate_sql("DELETE FROM procrastinate_jobs")

    def _procrastinate_sql(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.broker, autocommit=True) as connection:
            connection.execute(sql)

    def _send(self, name: str, *args: Any) -> None:
        task = getattr(self.tasks, name)
        family = self.peer.family
        if family == "rq":
            self._rq_queue().enqueue(task, *args)
        elif family == "celery":
            task.delay(*args)
        elif family == "dramatiq":
            task.send(*args)
        elif family.startswith("huey"):
            task(*args)
        else:
            with self._procrastinate():
                task.defer(**dict(zip(_ARGUMENTS[name], args, strict=True)))

    def _rq_queue(self) -> Any:
        import redis
        import rq

        if not hasattr(self, "_queue"):
            self._queue = rq.Queue(connection=redis.Redis.from_url(self.broker))
        return self._queue

    @contextmanager
    def _procrastinate(self) -> Iterator[None]:
        """procrastinate's app open around its pushes; nothing for others."""
        if self.peer.family != "procrastinate" or getattr(self, "_opened", False):
            yield
            return
        with self.tasks.app.open():
            self._opened = True
            try:
                yield
            finally:
                self._opened = False

    def _noops(self, jobs: int, *, bulk: bool) -> None:
        family = self.peer.family
        if family == "rq" and bulk:
            import rq

            queue = self._rq_queue()
            for first in range(0, jobs, common.BULK):
                size = min(common.BULK, jobs - first)
                queue.enqueue_many(
                    [rq.Queue.prepare_data(self.tasks.noop) for _ in range(size)]
                )
        elif family == "procrastinate":
            with self._procrastinate():
                if bulk:
                    for first in range(0, jobs, common.BULK):
                        size = min(common.BULK, jobs - first)
                        self.tasks.noop.batch_defer(*([{}] * size))
                else:
                    for _ in range(jobs):
                        self.tasks.noop.defer()
        else:
            # No bulk call: the loop is what a user would write.
            for _ in range(jobs):
                self._send("noop")

    def push_single(self, jobs: int) -> float:
        started = time.perf_counter()
        self._noops(jobs, bulk=False)
        rate = jobs / (time.perf_counter() - started)
        self.flush()
        return rate

    def push_bulk(self, jobs: int) -> float:
        started = time.perf_counter()
        self._noops(jobs, bulk=True)
        rate = jobs / (time.perf_counter() - started)
        self.flush()
        return rate

    # -- working -------------------------------------------------------------

    def drain(self, jobs: int, processes: int) -> float | None:
        command = self.peer.one if processes == 1 else self.peer.two
        if not command:
            return None
        marks = self.workdir / f"marks-{time.monotonic_ns()}"
        with self._procrastinate():
            self._send("mark", str(marks), "first")
            self._noops(jobs, bulk=True)
            self._send("mark", str(marks), "last")
        worker = self._worker(command)
        try:
            common.wait_for_mark(marks, "last", common.DRAIN_TIMEOUT)
        finally:
            common.stop(worker)
        self.flush()
        return common.rate_between_marks(marks, jobs)

    def latency(self, samples: int) -> tuple[float, float] | None:
        seen = self.workdir / f"latency-{time.monotonic_ns()}"
        worker = self._worker(self.peer.one)
        try:
            common.wait_idle(worker.pid)
            with self._procrastinate():
                return common.measure_latency(
                    lambda at: self._send("ping", str(seen), at), seen, samples
                )
        finally:
            common.stop(worker)
            self.flush()

    def idle_rss_mb(self) -> float | None:
        worker = self._worker(self.peer.one)
        try:
            common.wait_idle(worker.pid)
            return common.tree_rss_mb(worker.pid)
        finally:
            common.stop(worker)

    def _worker(self, command: list[str]) -> subprocess.Popen[bytes]:
        argv = [
            _script(command[0]) if index == 0 else part.format(broker=self.broker)
            for index, part in enumerate(command)
        ]
        return common.start_process(
            argv,
            self.workdir,
            self.workdir / f"{self.peer.name}.log",
            env={"PYTHONPATH": str(self.workdir)},
        )


def all_peers(redis_url: str, postgresql: str) -> list[Peer]:
    """Each peer at its defaults and at its best documented setting."""

    def db(number: int) -> str:
        return f"{redis_url.rstrip('/')}/{number}"

    rq_url = db(1)
    return [
        Peer(
            "rq-worker",
            "rq",
            "rq",
            ["rq", "worker", "-q", "--url", "{broker}"],
            broker=rq_url,
        ),
        Peer(
            "rq-simpleworker",
            "rq",
            "rq",
            ["rq", "worker", "-q", "-w", "rq.worker.SimpleWorker", "--url", "{broker}"],
            [
                "rq",
                "worker-pool",
                "-q",
                "-n",
                "2",
                "-w",
                "rq.worker.SimpleWorker",
                "--url",
                "{broker}",
            ],
            broker=rq_url,
        ),
        Peer(
            "celery-solo",
            "celery",
            "celery",
            [
                "celery",
                "-A",
                "bench_tasks",
                "worker",
                "-P",
                "solo",
                "--loglevel=WARNING",
            ],
            broker=db(2),
        ),
        Peer(
            "celery-prefork",
            "celery",
            "celery",
            ["celery", "-A", "bench_tasks", "worker", "-c", "1", "--loglevel=WARNING"],
            ["celery", "-A", "bench_tasks", "worker", "-c", "2", "--loglevel=WARNING"],
            broker=db(2),
        ),
        Peer(
            "dramatiq-1p1t",
            "dramatiq",
            "dramatiq",
            ["dramatiq", "bench_tasks", "-p", "1", "-t", "1"],
            ["dramatiq", "bench_tasks", "-p", "2", "-t", "1"],
            broker=db(3),
        ),
        Peer(
            "dramatiq-defaults",
            "dramatiq",
            "dramatiq",
            ["dramatiq", "bench_tasks", "-p", "1"],
            ["dramatiq", "bench_tasks", "-p", "2"],
            broker=db(3),
        ),
        Peer(
            "huey-redis",
            "huey-redis",
            "huey",
            ["huey_consumer", "bench_tasks.huey", "-q", "-w", "1"],
            ["huey_consumer", "bench_tasks.huey", "-q", "-w", "2", "-k", "process"],
            broker=db(4),
        ),
        Peer(
            "huey-sqlite",
            "huey-sqlite",
            "huey",
            ["huey_consumer", "bench_tasks.huey", "-q", "-w", "1"],
            ["huey_consumer", "bench_tasks.huey", "-q", "-w", "2", "-k", "process"],
        ),
        Peer(
            "procrastinate",
            "procrastinate",
            "procrastinate",
            ["procrastinate", "--app=bench_tasks.app", "worker"],
            ["procrastinate", "--app=bench_tasks.app", "worker", "--concurrency", "2"],
            broker=postgresql,
        ),
    ]

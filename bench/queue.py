"""Benchmark: Conveyor's queue beside its peers and the database's own limit.

What it measures
    The same no-op job through Conveyor on SQLite, PostgreSQL and MariaDB,
    through the peers (``bench/queue_peers.py``: RQ, Celery, Dramatiq, Huey,
    procrastinate) and through the raw driver alone on Conveyor's own
    ``jobs`` table (the ceiling). For each:

    - push rate, one call per job and in bulk (100 jobs a call; peers
      without a bulk call loop);
    - drain rate of N queued jobs (10,000) with one worker process and with
      two: N divided by the time between a marker job pushed just before
      them and one pushed just after them, both stamped by the job itself,
      so start-up is left out alike for everyone;
    - push-to-handle latency on an idle worker (p50, p99), at the worker's
      defaults;
    - an idle worker's resident memory, its job processes included.

    The raw ceilings: one job claimed and deleted per transaction, and 100
    per statement (``DELETE ... RETURNING`` with ``SKIP LOCKED`` where the
    database has it); pushes of one ``INSERT`` per transaction and of one
    100-row ``INSERT``, each statement in autocommit on the servers (one
    round trip, as durable as BEGIN and COMMIT around it). They delete a
    job when they take it, which gives up at-least-once: they are the
    limit, not a design.

    Every figure is the median of three runs, the systems interleaved within
    each run so that the machine's drift hits all alike; the table shows
    Conveyor divided by each peer and by the raw ceiling of its database.

How to run it
    pip install -r bench/requirements-queue.txt   # the peers, bench only
    python bench/queue.py                  # everything, about 20 minutes
    python bench/queue.py --quick          # CI: Conveyor and raw, < 2 min
    python bench/queue.py --json           # also a JSON summary, last line
    python bench/queue.py --only conveyor-postgresql,raw-postgresql

    PostgreSQL, MariaDB and Redis are taken from ``--postgresql``,
    ``--mysql`` and ``--redis`` (the local servers by default); each run
    gets a scratch schema or database that is dropped afterwards. A peer or
    server that is missing is reported and skipped; the run goes on.
"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path) -> object:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    # Run as a script, this folder comes first on sys.path, where this file
    # would stand for the standard library's ``queue`` in every module the
    # benchmark imports (psycopg among them).
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    bench = _load("bench_queue_bench", _HERE / "queue_bench.py")
    sys.exit(bench.main())  # type: ignore[attr-defined]
else:
    # Imported as ``queue`` by a module of another script of this folder
    # (bench/chaos.py, bench/memory.py): be the standard library's.
    _load("queue", Path(sysconfig.get_paths()["stdlib"]) / "queue.py")

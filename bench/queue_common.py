"""What bench/queue.py and bench/queue_peers.py share: markers and
latency probes, processes, the raw-driver ceiling, the table."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

METRICS = (
    "push_single",
    "push_bulk",
    "drain_1proc",
    "drain_2proc",
    "latency",
    "idle_rss_mb",
)
#: The figures of the table, in order, with whether more is better.
COLUMNS = {
    "push_single": True,
    "push_bulk": True,
    "drain_1proc": True,
    "drain_2proc": True,
    "drain_claim100": True,
    "latency_p50_ms": False,
    "latency_p99_ms": False,
    "idle_rss_mb": False,
}
#: Jobs per bulk push call (the raw multi-row INSERT uses the same size).
BULK = 100
DRAIN_TIMEOUT = 300.0
#: Seconds a worker gets to start and fall idle before it is measured.
START_SECONDS = 3.0
#: A pause after ``os.sync()`` for the disk's queue to empty.
SETTLE_SECONDS = 0.5
LATENCY_TIMEOUT = 30.0


class Unavailable(Exception):
    """The system cannot run here (not installed, server away); said once."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the jobs ------------------------------------------------------------------------

#: Conveyor's jobs; every peer's tasks module has the same three.
CONVEYOR_JOBS = '''\
"""Jobs of the queue benchmark, written by bench/queue.py."""

import time


def _append(path, line):
    with open(path, "a", encoding="ascii") as out:
        out.write(line + "\\n")


class Noop:
    def handle(self, data):
        pass


class Mark:
    """Stamps the time it runs: the drain is timed between two of them."""

    def handle(self, data):
        _append(data["file"], f"{data['name']} {time.time()!r}")


class Ping:
    """Writes how long ago it was pushed."""

    def handle(self, data):
        _append(data["file"], repr(time.time() - data["at"]))
'''


def settle() -> None:
    """Write out what earlier steps left dirty before a step is timed: a
    system that fsyncs per job (the raw one-job loops, SQLite) leaves
    writes behind that the disk would otherwise flush during the next
    system's measurement (PostgreSQL drained 40 % slower right after the
    SQLite systems)."""
    os.sync()
    time.sleep(SETTLE_SECONDS)


def rate_between_marks(marks: Path, jobs: int) -> float | None:
    """Jobs per second between the ``first`` and ``last`` markers."""
    stamps: dict[str, float] = {}
    if marks.exists():
        for line in marks.read_text(encoding="ascii").splitlines():
            name, at = line.split()
            stamps[name] = float(at)
    if "first" not in stamps or "last" not in stamps:
        return None
    return jobs / max(stamps["last"] - stamps["first"], 1e-9)


def wait_for_mark(marks: Path, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marks.exists() and any(
            line.startswith(name + " ")
            for line in marks.read_text(encoding="ascii").splitlines()
        ):
            return True
        time.sleep(0.05)
    return False


def measure_latency(
    push: Callable[[float], Any], seen: Path, samples: int
) -> tuple[float, float] | None:
    """Push ``samples`` pings one at a time, a little apart, each waited
    for; p50 and p99 of push-to-handle in milliseconds."""
    for index in range(samples):
        push(time.time())
        deadline = time.monotonic() + LATENCY_TIMEOUT
        while time.monotonic() < deadline:
            if seen.exists() and len(seen.read_text().splitlines()) > index:
                break
            time.sleep(0.001)
        # Apart, and off any polling rhythm of the worker.
        time.sleep(0.05 + (index * 0.037) % 0.1)
    if not seen.exists():
        return None
    values = sorted(float(v) * 1000 for v in seen.read_text().split())
    if not values:
        return None
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return statistics.median(values), p99


# -- processes -----------------------------------------------------------------------


def start_process(
    command: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    environment = {**os.environ, **(env or {})}
    environment.pop("CONVEYOR_DATABASE_URL", None)
    with log.open("ab") as output:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM to its whole group, then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def wait_idle(pid: int) -> None:
    time.sleep(START_SECONDS)
    if not Path(f"/proc/{pid}").exists():
        raise RuntimeError("the worker exited at start")


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` and all its descendants, in MB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        rss = _rss_kb(current)
        if rss is not None:
            total += rss
        pending += _children(current)
    return round(total / 1024, 1) if total else None


def _rss_kb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else None


def _children(pid: int) -> list[int]:
    found = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(part) for part in path.read_text().split()]
        except OSError:
            continue
    return found


# -- the raw ceiling -----------------------------------------------------------------


class RawRun:
    """The driver alone (psycopg, PyMySQL, sqlite3) on Conveyor's ``jobs``
    table, in this process."""

    def __init__(self, family: str, url: str) -> None:
        self.family = family
        self.connection = _raw_connect(family, url)
        self.mark = "%s" if family != "sqlite" else "?"

    def _execute(self, sql: str, params: Any = ()) -> list[Any]:
        cursor = self.connection.cursor()
        cursor.execute(sql, params)
        rows = list(cursor.fetchall()) if cursor.description else []
        cursor.close()
        return rows

    def _commit(self) -> None:
        self.connection.commit()

    def _begin(self) -> None:
        if self.family == "sqlite":
            self._execute("BEGIN IMMEDIATE")

    def clear(self) -> None:
        self._begin()
        self._execute("DELETE FROM jobs")
        self._commit()

    def _row(self) -> tuple[Any, ...]:
        """A row as Conveyor writes it for a no-op job: the same columns and
        a payload of the same length (the uuid a job carries included), so
        the ceiling writes as many bytes per row; one constant text, since
        the raw loop has no payload to build."""
        payload = f'{{"uuid": "{uuid.UUID(int=0)}", "job": "Noop", "data": {{}}}}'
        return ("default", payload, 0, int(time.time()), 0)

    def _insert(self, rows: int, *, alone: bool = False) -> None:
        """One INSERT of ``rows`` rows in a transaction; ``alone``, the
        statement is the transaction (PostgreSQL, MySQL: autocommit)."""
        m = self.mark
        values = ", ".join([f"({m}, {m}, {m}, {m}, {m}, {m})"] * rows)
        params: list[Any] = []
        for _ in range(rows):
            queue, payload, attempts, now, crashes = self._row()
            params += [queue, payload, attempts, now, now, crashes]
        if not alone:
            self._begin()
        self._execute(
            "INSERT INTO jobs (queue, payload, attempts, available_at, created_at,"
            f" crashes) VALUES {values}",
            params,
        )
        if not alone:
            self._commit()

    def push_single(self, jobs: int) -> float:
        return self._push(jobs, 1)

    def push_bulk(self, jobs: int) -> float:
        return self._push(jobs, BULK)

    def _push(self, jobs: int, per: int) -> float:
        """One INSERT of ``per`` rows per transaction, and no more: on the
        servers a lone statement in autocommit (one round trip, committed
        as durably as with BEGIN and COMMIT around it, which would be two
        round trips more); on SQLite, in process, BEGIN IMMEDIATE as
        Conveyor does."""
        alone = self.family != "sqlite"
        self._autocommit(alone)
        started = time.perf_counter()
        for first in range(0, jobs, per):
            self._insert(min(per, jobs - first), alone=alone)
        rate = jobs / (time.perf_counter() - started)
        self._autocommit(False)
        self.clear()
        return rate

    def _autocommit(self, on: bool) -> None:
        if self.family == "postgresql":
            self.connection.autocommit = on
        elif self.family == "mysql":
            self.connection.autocommit(on)

    def drain(self, jobs: int, processes: int) -> float | None:
        """One job claimed and deleted per transaction (one process)."""
        return self._drain(jobs, 1) if processes == 1 else None

    def drain_claim100(self, jobs: int) -> float:
        """100 jobs claimed and deleted per statement."""
        return self._drain(jobs, 100)

    def _drain(self, jobs: int, per: int) -> float:
        for first in range(0, jobs, 1000):
            self._insert(min(1000, jobs - first))
        started = time.perf_counter()
        taken = 0
        while True:
            got = self._take(per)
            if not got:
                break
            taken += got
        return taken / (time.perf_counter() - started)

    def _take(self, count: int) -> int:
        """Claim and delete up to ``count`` ready jobs in one transaction."""
        m = self.mark
        ready = "queue = 'default' AND reserved_at IS NULL"
        self._begin()
        if self.family == "postgresql":
            rows = self._execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE "
                f"{ready} ORDER BY id LIMIT {m} FOR UPDATE SKIP LOCKED) "
                "RETURNING id, payload",
                (count,),
            )
        elif self.family == "mysql":
            rows = self._execute(
                f"SELECT id, payload FROM jobs WHERE {ready} ORDER BY id "
                f"LIMIT {m} FOR UPDATE SKIP LOCKED",
                (count,),
            )
            if rows:
                ids = ", ".join(str(int(row[0])) for row in rows)
                self._execute(f"DELETE FROM jobs WHERE id IN ({ids})")
        else:
            rows = self._execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE "
                f"{ready} ORDER BY id LIMIT {m}) RETURNING id, payload",
                (count,),
            )
        self._commit()
        return len(rows)

    def latency(self, samples: int) -> None:
        return None

    def idle_rss_mb(self) -> None:
        return None


def _raw_connect(family: str, url: str) -> Any:
    parsed = sa.make_url(url)
    if family == "sqlite":
        assert parsed.database is not None
        # Autocommit off by hand: every transaction is begun explicitly.
        connection = sqlite3.connect(parsed.database, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA busy_timeout=30000")
        return connection
    if family == "postgresql":
        import psycopg

        options = parsed.query.get("options")
        return psycopg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password or None,
            dbname=parsed.database,
            options=options if isinstance(options, str) else None,
        )
    import pymysql

    return pymysql.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        database=parsed.database,
    )


# -- the report ----------------------------------------------------------------------


def show_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return " / ".join(show_value(v) for v in value)
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def summarise(results: Any, systems: list[Any], runs: int) -> dict[str, Any]:
    """Medians per metric and system, and Conveyor's ratios."""
    summary: dict[str, Any] = {"runs": runs}
    for metric in COLUMNS:
        summary[metric] = {
            system.name: results.median(metric, system.name)
            for system in systems
            if results.median(metric, system.name) is not None
        }
    ratios: dict[str, dict[str, float]] = {}
    for metric, more_is_better in COLUMNS.items():
        figures = summary[metric]
        for system in systems:
            if system.kind != "conveyor" or system.name not in figures:
                continue
            ours = figures[system.name]
            for other, theirs in figures.items():
                if other == system.name or not theirs or not ours:
                    continue
                if other.startswith("conveyor-"):
                    continue
                if other.startswith("raw-") and other != f"raw-{system.family}":
                    continue
                ratio = ours / theirs if more_is_better else theirs / ours
                key = f"{system.name} / {other}"
                ratios.setdefault(key, {})[metric] = round(ratio, 3)
            batch = summary["drain_claim100"].get(f"raw-{system.family}")
            if metric == "drain_1proc" and batch and ours:
                key = f"{system.name} / raw-{system.family}"
                ratios.setdefault(key, {})["drain_1proc_vs_claim100"] = round(
                    ours / batch, 3
                )
    summary["ratios"] = ratios
    summary["notes"] = dict(results.notes)
    summary["raw_note"] = (
        "raw-*: drain_1proc claims and deletes one job per transaction, "
        "drain_claim100 100 per statement (one process, no at-least-once)"
    )
    return summary


def print_table(summary: dict[str, Any]) -> None:
    names = sorted(
        {name for metric in COLUMNS for name in summary[metric]},
        key=lambda n: (not n.startswith("conveyor"), not n.startswith("raw"), n),
    )
    header = ["system", *COLUMNS]
    rows = [header]
    for name in names:
        rows.append(
            [name, *(show_value(summary[metric].get(name)) for metric in COLUMNS)]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print(f"medians of {summary['runs']} interleaved run(s); rates in jobs/s")
    for row in rows:
        print("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)))
    print(summary["raw_note"])
    print("\nConveyor's ratios (>1: Conveyor better; latency and memory inverted)")
    for pair, ratios in summary["ratios"].items():
        shown = ", ".join(f"{metric} {value:.2f}" for metric, value in ratios.items())
        print(f"  {pair}: {shown}")
    for name, note in summary["notes"].items():
        print(f"  note: {name}: {note}")

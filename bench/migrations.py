"""Benchmark: Conveyor's migration CLI against Alembic's and yoyo's.

What it measures
    The wall time of each tool's command line, run as a subprocess exactly as a
    user would type it, so interpreter start-up and imports count. For every
    database and tool it generates N one-table migrations (migration i creates
    table ``bench_i`` with an integer id and a varchar column; its down drops
    it), then times three operations on a database that starts empty:

    * apply:    ``conveyor migrate``, ``alembic upgrade head``,
                ``yoyo apply --batch``;
    * status:   ``conveyor migrate status``, ``alembic current``, ``yoyo list``
                (all N applied);
    * rollback: ``conveyor migrate rollback``, ``alembic downgrade base``,
                ``yoyo rollback --all --batch``.

    Conveyor's rollback undoes everything because ``migrate`` ran all N files
    as one batch. Each tool gets a fresh SQLite file, or a fresh PostgreSQL
    schema reached through ``search_path`` (MySQL/MariaDB: a fresh database),
    which is dropped afterwards. Every run of every tool is checked (N tables
    after apply, N applied rows in the status output, no table after
    rollback), so a tool that silently did nothing cannot look fast.

    The tools take turns inside each repeat, in an order that rotates from one
    repeat to the next, so drift in the machine's speed hits them alike; the
    table shows medians, and the ratios Alembic / Conveyor and yoyo / Conveyor
    (above 1 means Conveyor is faster). A second table gives the CPU time
    (user + system) of the CLI processes, which other load on the machine
    disturbs less than wall time; it leaves out the database server's work.
    The targets are judged on wall time. Generated migration files are
    byte-compiled before timing, as they would be after a first run.

How to run it
    pip install -r bench/requirements.txt      # yoyo-migrations, pyinstrument
    python bench/migrations.py                  # N=1000, SQLite + PostgreSQL, 3x
    python bench/migrations.py --quick          # N=100, one repeat
    python bench/migrations.py --databases sqlite --count 300 --json
    python bench/migrations.py --profile        # also write pyinstrument reports

    ``--postgresql-url`` (default postgresql://postgres@127.0.0.1:5432/test)
    and ``--mysql-url`` name the server; the benchmark creates and drops its
    own schemas or databases there. ``--json`` prints one JSON object with
    every figure as the last line of standard output; progress goes to
    standard error.

Targets it reports against, at N=1000
    * ``conveyor migrate status`` takes under 0.5 s;
    * ``conveyor migrate status`` is at least 3x faster than ``alembic current``;
    * ``conveyor migrate`` is no slower than ``alembic upgrade head``.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

TOOLS = ("conveyor", "alembic", "yoyo")
OPERATIONS = ("apply", "status", "rollback")
DATABASES = ("sqlite", "postgresql", "mysql")
PEERS = ("alembic", "yoyo")

DEFAULT_COUNT = 1000
DEFAULT_REPEAT = 3
QUICK_COUNT = 100
DEFAULT_POSTGRESQL_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: The number of migrations the targets are defined for.
TARGET_COUNT = 1000
STATUS_LIMIT_SECONDS = 0.5
STATUS_MIN_RATIO = 3.0
APPLY_MIN_RATIO = 1.0

#: How yoyo's raw SQL spells "an auto-numbered integer key" on each database,
#: matching what SQLAlchemy emits for the other two tools.
YOYO_ID_COLUMN = {
    "sqlite": "id INTEGER NOT NULL PRIMARY KEY",
    "postgresql": "id SERIAL NOT NULL PRIMARY KEY",
    "mysql": "id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- generating the migrations -------------------------------------------------


def table_name(index: int) -> str:
    return f"bench_{index}"


def conveyor_file_name(index: int) -> str:
    stamp = dt.datetime(2024, 1, 1) + dt.timedelta(seconds=index)
    return f"{stamp:%Y_%m_%d_%H%M%S}_create_{table_name(index)}_table.py"


def conveyor_source(index: int) -> str:
    table = table_name(index)
    return f'''\
import sqlalchemy as sa

from conveyor import Migration


class CreateBench{index}Table(Migration):
    def up(self) -> None:
        self.schema.create_table(
            "{table}",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(100), nullable=True),
        )

    def down(self) -> None:
        self.schema.drop_table("{table}")
'''


def write_conveyor_project(folder: Path, count: int) -> None:
    """``folder/migrations/`` with one Conveyor file per table; Conveyor's
    defaults find it when run from ``folder``."""
    migrations = folder / "migrations"
    migrations.mkdir(parents=True)
    for index in range(1, count + 1):
        path = migrations / conveyor_file_name(index)
        path.write_text(conveyor_source(index), encoding="utf-8")


def alembic_revision(index: int) -> str:
    """A stable twelve-digit hex id, shaped like the ones Alembic generates."""
    return hashlib.sha1(f"bench revision {index}".encode()).hexdigest()[:12]


def alembic_source(index: int) -> str:
    table = table_name(index)
    previous = alembic_revision(index - 1) if index > 1 else None
    return f'''\
"""create {table}

Revision ID: {alembic_revision(index)}
Revises: {previous or ""}
"""

import sqlalchemy as sa
from alembic import op

revision = {alembic_revision(index)!r}
down_revision = {previous!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "{table}",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("{table}")
'''


ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/alembic
"""

#: The database URL comes from ``alembic -x url=...``, so one environment
#: serves every database and schema the benchmark creates.
ALEMBIC_ENV = '''\
"""Online-only environment for the benchmark's generated revisions."""

import logging

import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

logging.basicConfig(format="%(levelname)s [%(name)s] %(message)s")
logging.getLogger("alembic").setLevel(logging.INFO)

url = context.get_x_argument(as_dictionary=True)["url"]
engine = sa.create_engine(url, poolclass=NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''


def write_alembic_project(folder: Path, count: int) -> None:
    """``alembic.ini``, ``alembic/env.py`` and a linear chain of revisions."""
    versions = folder / "alembic" / "versions"
    versions.mkdir(parents=True)
    (folder / "alembic.ini").write_text(ALEMBIC_INI, encoding="utf-8")
    (folder / "alembic" / "env.py").write_text(ALEMBIC_ENV, encoding="utf-8")
    for index in range(1, count + 1):
        name = f"{alembic_revision(index)}_create_{table_name(index)}.py"
        (versions / name).write_text(alembic_source(index), encoding="utf-8")


def yoyo_id(index: int) -> str:
    return f"{index:05d}_create_{table_name(index)}"


def yoyo_source(index: int, database: str) -> str:
    table = table_name(index)
    depends = f"{{{yoyo_id(index - 1)!r}}}" if index > 1 else "set()"
    create = f"CREATE TABLE {table} ({YOYO_ID_COLUMN[database]}, name VARCHAR(100))"
    return f'''\
"""Create {table}."""

from yoyo import step

__depends__ = {depends}

steps = [step("{create}", "DROP TABLE {table}")]
'''


def write_yoyo_project(folder: Path, count: int, database: str) -> None:
    """``folder/migrations/`` with one yoyo file per table, in ``database``'s
    SQL."""
    migrations = folder / "migrations"
    migrations.mkdir(parents=True)
    for index in range(1, count + 1):
        path = migrations / f"{yoyo_id(index)}.py"
        path.write_text(yoyo_source(index, database), encoding="utf-8")


def byte_compile(folder: Path) -> None:
    """Write the ``__pycache__`` files a first run would leave behind."""
    if not compileall.compile_dir(str(folder), quiet=1):
        raise RuntimeError(f"cannot byte-compile the files under {folder}")


def write_projects(root: Path, count: int, databases: Sequence[str]) -> dict[str, Path]:
    """One project folder per tool, keyed by its name; yoyo gets one per
    database (``yoyo-<database>``) since its SQL differs."""
    projects = {"conveyor": root / "conveyor", "alembic": root / "alembic"}
    write_conveyor_project(projects["conveyor"], count)
    write_alembic_project(projects["alembic"], count)
    for database in databases:
        folder = root / f"yoyo-{database}"
        write_yoyo_project(folder, count, database)
        projects[f"yoyo-{database}"] = folder
    for folder in projects.values():
        byte_compile(folder)
    return projects


# -- empty databases -----------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An empty database, or schema, for one run of one tool, with the URL
    each tool is given for it."""

    database: str
    #: For the benchmark's own checks, with an explicit driver.
    check_url: str
    #: The schema holding the tables, when not the connection's default.
    schema: str | None
    conveyor_url: str
    alembic_url: str
    yoyo_url: str


def render(url: sa.URL) -> str:
    return url.render_as_string(hide_password=False)


@contextmanager
def sqlite_target(workdir: Path) -> Iterator[Target]:
    path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
    url = f"sqlite:///{path}"
    try:
        yield Target("sqlite", url, None, url, url, url)
    finally:
        for leftover in workdir.glob(f"{path.name}*"):
            leftover.unlink()


def admin_engine(url: sa.URL) -> sa.Engine:
    return sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


@contextmanager
def postgresql_target(base_url: str) -> Iterator[Target]:
    base = sa.make_url(base_url).set(drivername="postgresql+psycopg")
    schema = f"conveyor_bench_{uuid.uuid4().hex[:10]}"
    engine = admin_engine(base)
    with engine.connect() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    on_path = base.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield Target(
            database="postgresql",
            check_url=render(base),
            schema=schema,
            conveyor_url=render(on_path.set(drivername="postgresql")),
            alembic_url=render(on_path),
            yoyo_url=render(base.update_query_dict({"schema": schema})),
        )
    finally:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


@contextmanager
def mysql_target(base_url: str) -> Iterator[Target]:
    base = sa.make_url(base_url).set(drivername="mysql+pymysql")
    name = f"conveyor_bench_{uuid.uuid4().hex[:10]}"
    engine = admin_engine(base)
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE `{name}`")
    own = base.set(database=name)
    try:
        yield Target(
            database="mysql",
            check_url=render(own),
            schema=None,
            conveyor_url=render(own.set(drivername="mysql")),
            alembic_url=render(own),
            yoyo_url=render(own.set(drivername="mysql")),
        )
    finally:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        engine.dispose()


@dataclass(frozen=True)
class Servers:
    workdir: Path
    postgresql_url: str
    mysql_url: str


def fresh_target(database: str, servers: Servers) -> AbstractContextManager[Target]:
    """An empty place for one tool's run, removed when the block ends."""
    if database == "sqlite":
        return sqlite_target(servers.workdir)
    if database == "postgresql":
        return postgresql_target(servers.postgresql_url)
    return mysql_target(servers.mysql_url)


def bench_tables(target: Target) -> list[str]:
    """The ``bench_*`` tables that exist now."""
    engine = sa.create_engine(target.check_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            names = sa.inspect(connection).get_table_names(schema=target.schema)
    finally:
        engine.dispose()
    return [name for name in names if re.fullmatch(r"bench_\d+", name)]


# -- the commands --------------------------------------------------------------


def executable(name: str) -> str:
    """The console script installed next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(
            f"'{name}' is not installed: pip install -r bench/requirements.txt"
        )
    return found


@dataclass(frozen=True)
class Command:
    argv: list[str]
    cwd: Path


def commands_for(
    tool: str, target: Target, projects: dict[str, Path]
) -> dict[str, Command]:
    """The apply, status and rollback command lines of ``tool``."""
    if tool == "conveyor":
        folder = projects["conveyor"]
        base = [executable("conveyor"), "migrate"]
        url = ["--database", target.conveyor_url]
        return {
            "apply": Command([*base, *url], folder),
            "status": Command([*base, "status", *url], folder),
            "rollback": Command([*base, "rollback", *url], folder),
        }
    if tool == "alembic":
        folder = projects["alembic"]
        base = [executable("alembic"), "-x", f"url={target.alembic_url}"]
        return {
            "apply": Command([*base, "upgrade", "head"], folder),
            "status": Command([*base, "current"], folder),
            "rollback": Command([*base, "downgrade", "base"], folder),
        }
    folder = projects[f"yoyo-{target.database}"]
    options = ["--batch", "--no-config-file", "--database", target.yoyo_url]
    source = str(folder / "migrations")
    yoyo = executable("yoyo")
    return {
        "apply": Command([yoyo, "apply", *options, source], folder),
        "status": Command([yoyo, "list", *options, source], folder),
        "rollback": Command([yoyo, "rollback", "--all", *options, source], folder),
    }


def child_environment() -> dict[str, str]:
    """This environment without settings that would redirect the tools."""
    environment = dict(os.environ)
    environment.pop("CONVEYOR_DATABASE_URL", None)
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    return environment


@dataclass(frozen=True)
class Finished:
    """One command that ran to completion."""

    wall: float
    #: User plus system CPU time of the command's processes (not the
    #: database server's), which a busy machine disturbs less than wall time.
    cpu: float
    stdout: str


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(command: Command) -> Finished:
    """Run ``command`` to completion and time it."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    finished = subprocess.run(
        command.argv,
        cwd=command.cwd,
        env=child_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        tail = "\n".join(finished.stderr.strip().splitlines()[-15:])
        raise RuntimeError(
            f"{' '.join(command.argv)} exited with {finished.returncode}:\n{tail}"
        )
    return Finished(wall, children_cpu() - cpu_before, finished.stdout)


# -- checking that each command did its work --------------------------------------


def applied_in_listing(tool: str, output: str, count: int) -> bool:
    """Whether the status output of ``tool`` shows all ``count`` applied."""
    if tool == "conveyor":
        return len(re.findall(r"\bRan\b", output)) == count
    if tool == "alembic":
        return f"{alembic_revision(count)} (head)" in output
    applied = [line for line in output.splitlines() if re.match(r"A\s", line)]
    return len(applied) == count


def check(operation: str, tool: str, target: Target, output: str, count: int) -> None:
    if operation == "apply":
        ok = len(bench_tables(target)) == count
    elif operation == "status":
        ok = applied_in_listing(tool, output, count)
    else:
        ok = not bench_tables(target)
    if not ok:
        raise RuntimeError(
            f"{tool} {operation} on {target.database} did not do its work; "
            f"its output began:\n{output[:2000]}"
        )


# -- measuring -----------------------------------------------------------------


#: Seconds by database, operation and tool, one value per repeat.
Timings = dict[str, dict[str, dict[str, list[float]]]]


@dataclass(frozen=True)
class Results:
    wall: Timings
    cpu: Timings


def measure_tool(
    tool: str, target: Target, projects: dict[str, Path], count: int
) -> dict[str, Finished]:
    """Apply, status and rollback of one tool on one empty target."""
    runs = {}
    for operation, command in commands_for(tool, target, projects).items():
        runs[operation] = run_timed(command)
        check(operation, tool, target, runs[operation].stdout, count)
    return runs


def empty_timings(databases: Sequence[str]) -> Timings:
    return {
        db: {op: {tool: [] for tool in TOOLS} for op in OPERATIONS} for db in databases
    }


def rotated(items: Sequence[str], by: int) -> list[str]:
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


def run_benchmark(
    databases: Sequence[str],
    servers: Servers,
    projects: dict[str, Path],
    count: int,
    repeat: int,
) -> Results:
    """Every tool on every database, ``repeat`` times, tools taking turns."""
    results = Results(empty_timings(databases), empty_timings(databases))
    for run in range(repeat):
        for position, database in enumerate(databases):
            for tool in rotated(TOOLS, run + position):
                with fresh_target(database, servers) as target:
                    runs = measure_tool(tool, target, projects, count)
                for operation, finished in runs.items():
                    results.wall[database][operation][tool].append(finished.wall)
                    results.cpu[database][operation][tool].append(finished.cpu)
                figures = ", ".join(
                    f"{op} {f.wall:.3f} s (cpu {f.cpu:.3f})" for op, f in runs.items()
                )
                log(f"[{database} {run + 1}/{repeat}] {tool:<8} {figures}")
    return results


# -- summarising ---------------------------------------------------------------


Medians = dict[str, dict[str, dict[str, float]]]


def medians_of(timings: Timings) -> Medians:
    return {
        db: {
            op: {tool: statistics.median(values) for tool, values in tools.items()}
            for op, tools in operations.items()
        }
        for db, operations in timings.items()
    }


def ratios_of(medians: Medians) -> dict[str, dict[str, dict[str, float]]]:
    """Peer time / Conveyor time per database and operation."""
    return {
        db: {
            op: {peer: tools[peer] / tools["conveyor"] for peer in PEERS}
            for op, tools in operations.items()
        }
        for db, operations in medians.items()
    }


@dataclass(frozen=True)
class Verdict:
    target: str
    database: str
    passed: bool
    detail: str


def evaluate_targets(medians: Medians) -> list[Verdict]:
    verdicts = []
    for db, operations in medians.items():
        status, apply = operations["status"], operations["apply"]
        status_ratio = status["alembic"] / status["conveyor"]
        apply_ratio = apply["alembic"] / apply["conveyor"]
        verdicts += [
            Verdict(
                f"conveyor migrate status under {STATUS_LIMIT_SECONDS} s",
                db,
                status["conveyor"] < STATUS_LIMIT_SECONDS,
                f"{status['conveyor']:.3f} s",
            ),
            Verdict(
                f"migrate status >= {STATUS_MIN_RATIO:g}x faster than alembic current",
                db,
                status_ratio >= STATUS_MIN_RATIO,
                f"{status_ratio:.2f}x",
            ),
            Verdict(
                "conveyor migrate no slower than alembic upgrade head",
                db,
                apply_ratio >= APPLY_MIN_RATIO,
                f"{apply_ratio:.2f}x",
            ),
        ]
    return verdicts


COMMAND_LABELS = {
    "apply": "migrate / upgrade head / apply",
    "status": "status / current / list",
    "rollback": "rollback / downgrade base / rollback --all",
}


def format_table(medians: Medians, title: str) -> str:
    ratios = ratios_of(medians)
    header = (
        f"{'database':<11}{'operation':<10}{'conveyor':>10}{'alembic':>10}"
        f"{'yoyo':>10}{'alembic/conv':>14}{'yoyo/conv':>11}"
    )
    lines = [
        title,
        "",
        header,
        "-" * len(header),
    ]
    for db, operations in medians.items():
        for op, tools in operations.items():
            lines.append(
                f"{db:<11}{op:<10}{tools['conveyor']:>10.3f}"
                f"{tools['alembic']:>10.3f}{tools['yoyo']:>10.3f}"
                f"{ratios[db][op]['alembic']:>13.2f}x{ratios[db][op]['yoyo']:>10.2f}x"
            )
    return "\n".join(lines)


def format_report(results: Results, count: int, repeat: int) -> str:
    """The wall-time table, the CPU-time table and what the rows mean."""
    runs = f"N={count} migrations, median of {repeat} run(s)"
    wall = format_table(
        medians_of(results.wall),
        f"Wall time of the CLI in seconds, {runs} (ratio > 1: Conveyor is faster)",
    )
    cpu = format_table(
        medians_of(results.cpu),
        f"CPU time (user + system) of the CLI process in seconds, {runs}",
    )
    legend = [f"  {op:<9} = {label}" for op, label in COMMAND_LABELS.items()]
    return "\n".join([wall, "", cpu, "", *legend])


def format_verdicts(verdicts: Sequence[Verdict], count: int) -> str:
    title = "Targets"
    if count != TARGET_COUNT:
        title += f" (defined for N={TARGET_COUNT}; shown here for N={count})"
    lines = [title + ":"]
    for verdict in verdicts:
        mark = "PASS" if verdict.passed else "FAIL"
        lines.append(
            f"  {mark}  {verdict.database:<11}{verdict.target} ({verdict.detail})"
        )
    return "\n".join(lines)


def summary_json(
    results: Results, count: int, repeat: int, verdicts: Sequence[Verdict]
) -> str:
    medians = medians_of(results.wall)
    return json.dumps(
        {
            "count": count,
            "repeat": repeat,
            "seconds": results.wall,
            "median_seconds": medians,
            "ratio_to_conveyor": ratios_of(medians),
            "cpu_seconds": results.cpu,
            "median_cpu_seconds": medians_of(results.cpu),
            "targets": [
                {
                    "target": v.target,
                    "database": v.database,
                    "passed": v.passed,
                    "value": v.detail,
                }
                for v in verdicts
            ],
        },
        separators=(",", ":"),
    )


# -- profiling -----------------------------------------------------------------


def profile_conveyor(
    databases: Sequence[str],
    servers: Servers,
    projects: dict[str, Path],
    count: int,
    results: Path,
) -> list[Path]:
    """Run Conveyor's three commands once more per database under
    pyinstrument and write its text reports to ``results``."""
    results.mkdir(parents=True, exist_ok=True)
    reports = []
    for database in databases:
        with fresh_target(database, servers) as target:
            for operation, command in commands_for(
                "conveyor", target, projects
            ).items():
                report = results / f"conveyor-{database}-{operation}-{count}.txt"
                profiled = Command(
                    [
                        sys.executable,
                        "-m",
                        "pyinstrument",
                        "--renderer",
                        "text",
                        "--outfile",
                        str(report),
                        "-m",
                        "conveyor",
                        *command.argv[1:],
                    ],
                    command.cwd,
                )
                finished = run_timed(profiled)
                check(operation, "conveyor", target, finished.stdout, count)
                reports.append(report)
    return reports


# -- the command line ----------------------------------------------------------


def parse_databases(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(DATABASES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"choose from {', '.join(DATABASES)} (got {text!r})"
        )
    return list(dict.fromkeys(names))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the migration CLIs of Conveyor, Alembic and yoyo.",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        metavar="N",
        help=f"migrations per tool (default {DEFAULT_COUNT}; {QUICK_COUNT} "
        "with --quick)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        metavar="R",
        help=f"runs per tool and database; medians are reported (default "
        f"{DEFAULT_REPEAT}; 1 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"N={QUICK_COUNT} and one run, for a smoke test",
    )
    parser.add_argument(
        "--databases",
        type=parse_databases,
        default=["sqlite", "postgresql"],
        metavar="LIST",
        help="comma-separated: sqlite, postgresql, mysql (default sqlite,postgresql)",
    )
    parser.add_argument("--postgresql-url", default=DEFAULT_POSTGRESQL_URL)
    parser.add_argument("--mysql-url", default=DEFAULT_MYSQL_URL)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print every figure as one JSON object on the last line",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"also profile Conveyor's commands with pyinstrument; reports go "
        f"to {RESULTS_DIR}",
    )
    args = parser.parse_args(argv)
    if args.count is None:
        args.count = QUICK_COUNT if args.quick else DEFAULT_COUNT
    if args.repeat is None:
        args.repeat = 1 if args.quick else DEFAULT_REPEAT
    if args.count < 1 or args.repeat < 1:
        parser.error("--count and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as scratch:
        root = Path(scratch)
        log(f"writing {args.count} migrations per tool under {root}")
        projects = write_projects(root, args.count, args.databases)
        servers = Servers(root, args.postgresql_url, args.mysql_url)
        results = run_benchmark(
            args.databases, servers, projects, args.count, args.repeat
        )
        reports = []
        if args.profile:
            reports = profile_conveyor(
                args.databases, servers, projects, args.count, RESULTS_DIR
            )

    verdicts = evaluate_targets(medians_of(results.wall))
    print(format_report(results, args.count, args.repeat))
    print()
    print(format_verdicts(verdicts, args.count))
    for report in reports:
        print(f"profile: {report}")
    if args.json:
        print(summary_json(results, args.count, args.repeat, verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

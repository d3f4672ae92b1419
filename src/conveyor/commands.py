"""The plain functions behind the CLI verbs, importable by applications and
tests; the Click layer only parses options and renders what these return."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.config import CONFIG_FILE, Settings
from conveyor.db import create_engine
from conveyor.migrations.generator import make_migration
from conveyor.migrations.runner import Migrator, StepListener

if TYPE_CHECKING:
    from conveyor.drivers.database import DatabaseStore

__all__ = ["init_project", "make_migration", "open_migrator", "open_store"]

_CONFIG_TEMPLATE = """\
# Conveyor settings. Every key is optional; the values below are the defaults.
# CONVEYOR_DATABASE_URL in the environment overrides database_url, and
# --database URL on any command overrides both.

# A SQLAlchemy URL. A bare postgresql:// uses psycopg 3, mysql:// PyMySQL:
#   database_url = "postgresql://user:password@127.0.0.1:5432/app"
#   database_url = "mysql://user:password@127.0.0.1:3306/app"
database_url = "sqlite:///conveyor.db"

# Folder of job classes, relative to this file.
jobs = "jobs"

[migrations]
# Folder of migration files, relative to this file.
path = "migrations"
# Table recording which migrations ran; rename it if "migrations" is taken
# (CodeIgniter 3's migration library keeps a table of that name).
table = "migrations"
# Seconds a run waits for another run's migration lock.
lock_timeout = 60

[queue]
# The queue a push goes to when neither the push nor the job names one.
default = "default"
# Seconds after which a job whose worker went silent is handed out again.
# Must be more than the longest --timeout of your workers.
retry_after = 90
"""


def init_project(folder: Path) -> list[Path]:
    """Write a commented ``conveyor.toml`` and the ``migrations`` and ``jobs``
    folders in ``folder``, keeping whatever is already there. Returns what was
    created."""
    created = []
    config = folder / CONFIG_FILE
    if not config.exists():
        config.write_text(_CONFIG_TEMPLATE, encoding="utf-8")
        created.append(config)
    for name in ("migrations", "jobs"):
        path = folder / name
        if not path.exists():
            path.mkdir(parents=True)
            created.append(path)
    return created


def open_migrator(
    settings: Settings,
    *,
    lock_timeout: float | None = None,
    on_step: StepListener | None = None,
) -> Migrator:
    """A migrator for the configured database and migrations folder."""
    timeout = settings.migrations.lock_timeout if lock_timeout is None else lock_timeout
    engine = create_engine(settings.database_url, busy_timeout=timeout)
    return Migrator(
        engine,
        settings.migrations_path,
        table=settings.migrations.table,
        lock_timeout=timeout,
        on_step=on_step,
    )


def open_store(settings: Settings) -> DatabaseStore:
    """The job store of the configured database."""
    # Imported here so migration commands never load the queue.
    from conveyor.drivers.database import DatabaseStore
    from conveyor.drivers.tables import queue_tables

    return DatabaseStore(
        create_engine(settings.database_url),
        queue_tables(settings.queue),
        retry_after=settings.queue.retry_after,
    )

"""Settings: where they come from and what they hold.

Precedence, lowest first: built-in defaults, ``conveyor.toml`` (or the
``[tool.conveyor]`` table of ``pyproject.toml``) in the application folder,
the ``CONVEYOR_DATABASE_URL`` environment variable, then the ``--database``
option. Relative folders are resolved against the folder of the settings
file, or the current folder when there is none.

TOML cannot hold both ``migrations = "db/migrations"`` and a ``[migrations]``
table, so the migrations folder may be given either way: as the top-level
string, or as ``path`` inside the table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conveyor.exceptions import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_DATABASE_URL = "sqlite:///conveyor.db"
ENV_DATABASE_URL = "CONVEYOR_DATABASE_URL"
CONFIG_FILE = "conveyor.toml"

_TOP_LEVEL_KEYS = {"database_url", "migrations", "jobs", "queue"}
_MIGRATION_KEYS = {"path", "table", "lock_timeout"}
_QUEUE_KEYS = {
    "default",
    "retry_after",
    "heartbeat_timeout",
    "max_crashes",
    "max_clock_skew",
    "table",
    "failed_table",
    "workers_table",
}


@dataclass(frozen=True)
class MigrationSettings:
    """The ``[migrations]`` table."""

    #: Name of the bookkeeping table; change it when ``migrations`` is taken.
    table: str = "migrations"
    #: Seconds a run waits for another run's lock before giving up.
    lock_timeout: float = 60.0


@dataclass(frozen=True)
class QueueSettings:
    """The ``[queue]`` table."""

    #: The queue a job goes to when neither the push nor the job names one.
    default: str = "default"
    #: Seconds after which a reserved job whose worker went silent is handed
    #: out again; must exceed every job's timeout.
    retry_after: int = 90
    #: Seconds without a heartbeat after which a worker is presumed dead and
    #: the jobs it holds are released at once, without waiting out
    #: ``retry_after``.
    heartbeat_timeout: int = 30
    #: Deaths of its worker (a signal, an exit, a lost host) a job may cause
    #: before it is failed as poison; 0 for no limit.
    max_crashes: int = 3
    #: Seconds the worker's clock may differ from the database server's
    #: before the worker warns at start.
    max_clock_skew: int = 5
    table: str = "jobs"
    failed_table: str = "failed_jobs"
    workers_table: str = "job_workers"


@dataclass(frozen=True)
class Settings:
    """Everything the commands need to know, resolved and validated."""

    database_url: str = DEFAULT_DATABASE_URL
    migrations_path: Path = Path("migrations")
    #: Where job classes live: folders (relative to ``root``) or packages.
    jobs: tuple[str, ...] = ("jobs",)
    migrations: MigrationSettings = field(default_factory=MigrationSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    #: The folder relative paths are taken from.
    root: Path = Path(".")
    #: The file the settings were read from, if any.
    source: Path | None = None


def load_settings(
    *,
    config_path: Path | None = None,
    database_url: str | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the settings as the CLI does, applying every override in order."""
    cwd = cwd or Path.cwd()
    environ = os.environ if environ is None else environ

    source = config_path or _find_config_file(cwd)
    raw: Mapping[str, Any] = {}
    if source is not None:
        raw = read_config_file(source)
    root = source.parent if source is not None else cwd

    settings = settings_from_mapping(raw, root=root, source=source)
    url = database_url or environ.get(ENV_DATABASE_URL) or settings.database_url
    return replace(settings, database_url=url)


def _find_config_file(cwd: Path) -> Path | None:
    candidate = cwd / CONFIG_FILE
    if candidate.is_file():
        return candidate
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file() and "conveyor" in _read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def read_config_file(path: Path) -> Mapping[str, Any]:
    """Return the Conveyor table of a ``conveyor.toml`` or ``pyproject.toml``."""
    if not path.is_file():
        raise ConfigError(f"{path}: settings file not found")
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("conveyor", {})
        return table if isinstance(table, dict) else {}
    return data


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc


def settings_from_mapping(
    raw: Mapping[str, Any], *, root: Path, source: Path | None = None
) -> Settings:
    """Validate a mapping shaped like ``conveyor.toml`` and build settings."""
    where = str(source) if source is not None else "settings"
    _reject_unknown(raw, _TOP_LEVEL_KEYS, where)

    migrations_raw = raw.get("migrations", {})
    if isinstance(migrations_raw, str):
        migrations_raw = {"path": migrations_raw}
    if not isinstance(migrations_raw, dict):
        raise ConfigError(f"{where}: 'migrations' must be a folder or a table")
    _reject_unknown(migrations_raw, _MIGRATION_KEYS, f"{where} [migrations]")

    queue_raw = raw.get("queue", {})
    if not isinstance(queue_raw, dict):
        raise ConfigError(f"{where}: [queue] must be a table")
    _reject_unknown(queue_raw, _QUEUE_KEYS, f"{where} [queue]")
    queue_where = f"{where} [queue]"

    return Settings(
        database_url=_string(raw, "database_url", DEFAULT_DATABASE_URL, where),
        migrations_path=root / _string(migrations_raw, "path", "migrations", where),
        jobs=_job_sources(raw.get("jobs", "jobs"), where),
        migrations=MigrationSettings(
            table=_string(migrations_raw, "table", "migrations", where),
            lock_timeout=_number(migrations_raw, "lock_timeout", 60.0, where),
        ),
        queue=QueueSettings(
            default=_string(queue_raw, "default", "default", queue_where),
            retry_after=int(_number(queue_raw, "retry_after", 90, queue_where)),
            heartbeat_timeout=_heartbeat_timeout(queue_raw, queue_where),
            max_crashes=_count(queue_raw, "max_crashes", 3, queue_where),
            max_clock_skew=int(_number(queue_raw, "max_clock_skew", 5, queue_where)),
            table=_string(queue_raw, "table", "jobs", queue_where),
            failed_table=_string(queue_raw, "failed_table", "failed_jobs", queue_where),
            workers_table=_string(
                queue_raw, "workers_table", "job_workers", queue_where
            ),
        ),
        root=root,
        source=source,
    )


def _job_sources(value: Any, where: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, str) and v for v in values)
    ):
        raise ConfigError(
            f"{where}: 'jobs' must be a folder or package name, or a list of them"
        )
    return tuple(values)


def _heartbeat_timeout(raw: Mapping[str, Any], where: str) -> int:
    # Workers beat about once a second; a limit of a few seconds would call
    # a worker dead for one slow query.
    value = int(_number(raw, "heartbeat_timeout", 30, where))
    if value < 5:
        raise ConfigError(f"{where}: 'heartbeat_timeout' must be 5 seconds or more")
    return value


def _count(raw: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: '{key}' must be a whole number, 0 or more")
    return value


def _reject_unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        expected = ", ".join(sorted(known))
        raise ConfigError(
            f"{where}: unknown key '{unknown[0]}' (expected one of: {expected})"
        )


def _string(raw: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    return value


def _number(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{where}: '{key}' must be a number of seconds, 0 or more")
    return float(value)

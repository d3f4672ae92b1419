"""Options every command takes, and turning them into settings."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from conveyor.config import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

_META_CONFIG = "conveyor.config"
_META_DATABASE = "conveyor.database"
#: Settings made by whatever runs the commands (``flask conveyor`` puts the
#: application's here); ``--database`` still overrides their URL.
META_SETTINGS = "conveyor.settings"
VERBOSE = "conveyor.verbose"


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        # The group and its subcommands share ctx.meta, so an option given
        # before or after the subcommand name counts the same.
        if value:
            ctx.meta[key] = value
            if key == VERBOSE:
                configure_logging(verbose=True)
        return value

    return callback


def common_options(command: F) -> F:
    """``--config``, ``--database`` and ``-v``, accepted by every command."""
    decorators = [
        click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path),
            expose_value=False,
            callback=_remember(_META_CONFIG),
            help="Settings file (default: ./conveyor.toml or ./pyproject.toml).",
        ),
        click.option(
            "--database",
            "database_url",
            metavar="URL",
            expose_value=False,
            callback=_remember(_META_DATABASE),
            help="Database URL; overrides the settings and CONVEYOR_DATABASE_URL.",
        ),
        click.option(
            "-v",
            "--verbose",
            is_flag=True,
            expose_value=False,
            callback=_remember(VERBOSE),
            help="Log each step, and show tracebacks on errors.",
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def common_arguments(ctx: click.Context) -> list[str]:
    """The common options as given, for a command run in another process."""
    arguments = []
    if _META_CONFIG in ctx.meta:
        arguments.append(f"--config={ctx.meta[_META_CONFIG]}")
    if _META_DATABASE in ctx.meta:
        arguments.append(f"--database={ctx.meta[_META_DATABASE]}")
    if ctx.meta.get(VERBOSE):
        arguments.append("-v")
    return arguments


def settings_for(ctx: click.Context) -> Settings:
    given = ctx.meta.get(META_SETTINGS)
    if isinstance(given, Settings) and _META_CONFIG not in ctx.meta:
        url = ctx.meta.get(_META_DATABASE)
        return replace(given, database_url=url) if url else given
    return load_settings(
        config_path=ctx.meta.get(_META_CONFIG),
        database_url=ctx.meta.get(_META_DATABASE),
    )


def configure_logging(*, verbose: bool) -> None:
    """The CLI's log handler: warnings only, or every step with ``-v``."""
    root = logging.getLogger("conveyor")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"
            if verbose
            else "%(levelname)s: %(message)s"
        )
    )
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def console() -> Console:
    # Imported here so that commands printing plain lines, such as migrate
    # status, do not pay for Rich at start-up.
    from rich.console import Console

    # Piped output keeps long migration names on one line.
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)

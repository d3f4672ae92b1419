"""The ``conveyor`` command: a thin Click layer over :mod:`conveyor.commands`."""

from __future__ import annotations

import gc
import sys
import traceback
from importlib import import_module
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from conveyor import __version__
from conveyor.cli.options import VERBOSE, configure_logging
from conveyor.commands import init_project
from conveyor.exceptions import ConveyorError

# What is imported by now (Click, SQLAlchemy) lives as long as the process.
# Moved to the collector's permanent generation, it is no longer walked by
# each collection, nor by the one at exit: a fifth of the CPU time of a
# short command such as migrate status.
gc.freeze()


class ConveyorGroup(click.Group):
    """Turns every error into one line on stderr and exit code 1; ``-v``
    adds the traceback. Subcommand groups are imported only when named, so
    ``conveyor migrate status`` never loads the worker."""

    lazy_groups = {
        "dashboard": "conveyor.cli.dashboard_commands:dashboard",
        "migrate": "conveyor.cli.migrate_commands:migrate",
        "queue": "conveyor.cli.queue_commands:queue",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_groups])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_groups:
            module_name, attribute = self.lazy_groups[cmd_name].split(":")
            command: click.Command = getattr(import_module(module_name), attribute)
            return command
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except ConveyorError as exc:
            _fail(ctx, str(exc), exc)
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            first = str(reason).strip().splitlines()[0] if str(reason).strip() else ""
            _fail(ctx, f"database error: {first}", exc)
        except BrokenPipeError:
            # Output piped into head or less that closed early: not an error.
            sys.stderr.close()
            ctx.exit(0)
        except OSError as exc:
            _fail(ctx, f"{exc.filename or 'file'}: {exc.strerror or exc}", exc)
        except Exception as exc:
            # A bug of ours: still one line, with the traceback under -v.
            _fail(
                ctx,
                f"unexpected {type(exc).__name__}: {exc} (run with -v for "
                "the traceback)",
                exc,
            )


def _fail(ctx: click.Context, message: str, exc: BaseException) -> None:
    if ctx.meta.get(VERBOSE):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(f"error: {message}", err=True)
    ctx.exit(1)


@click.group(
    cls=ConveyorGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="conveyor")
def main() -> None:
    """Background jobs and database migrations for Python applications."""
    configure_logging(verbose=False)


@main.command("init")
@click.argument(
    "folder", type=click.Path(file_okay=False, path_type=Path), default=Path(".")
)
def init_command(folder: Path) -> None:
    """Write a commented conveyor.toml and the migrations/ and jobs/ folders."""
    created = init_project(folder)
    for path in created:
        click.echo(f"created {path}")
    if not created:
        click.echo("nothing to do: conveyor.toml, migrations/ and jobs/ exist")

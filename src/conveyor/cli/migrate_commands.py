"""``conveyor migrate ...``: make, migrate, status, rollback, reset, refresh,
fresh, install."""

from __future__ import annotations

import gc
from typing import Any

import click

from conveyor.cli.options import common_options, settings_for
from conveyor.commands import make_migration, open_migrator
from conveyor.migrations.execution import Step
from conveyor.migrations.runner import Migrator
from conveyor.migrations.status import Status

# As in conveyor.cli: what this import brought in stays for good, so the
# collector need not walk it.
gc.freeze()

_STATE_LABELS = {
    "ran": ("Ran", "green"),
    "pending": ("Pending", "yellow"),
    "missing": ("Ran, file missing", "red"),
    "failed": ("Failed", "red"),
    "running": ("Started, unfinished", "red"),
}


def _lock_timeout_option(command: Any) -> Any:
    return click.option(
        "--lock-timeout",
        type=click.FloatRange(min=0),
        metavar="SECONDS",
        help="How long to wait for another run's lock (default 60, or "
        "[migrations] lock_timeout).",
    )(command)


def _print_step(step: Step) -> None:
    if step.sql is not None:
        click.echo(f"-- {step.migration} ({step.direction})")
        click.echo(step.sql or "-- (no SQL)")
        click.echo()
        return
    if step.forgotten:
        verb = "FORGOTTEN (file missing, down() not run)"
    else:
        verb = "DONE" if step.direction == "up" else "ROLLED BACK"
    label = "Running" if step.direction == "up" else "Rolling back"
    click.echo(f"  {label} {step.migration} ... {step.seconds * 1000:.1f} ms {verb}")


def _migrator(ctx: click.Context, lock_timeout: float | None = None) -> Migrator:
    return open_migrator(
        settings_for(ctx), lock_timeout=lock_timeout, on_step=_print_step
    )


def _done(steps: list[Step], nothing: str) -> None:
    if not steps:
        click.echo(nothing)


@click.group(invoke_without_command=True)
@click.option("--step", is_flag=True, help="Give each migration its own batch.")
@click.option("--pretend", is_flag=True, help="Print the SQL; change nothing.")
@_lock_timeout_option
@common_options
@click.pass_context
def migrate(
    ctx: click.Context, step: bool, pretend: bool, lock_timeout: float | None
) -> None:
    """Run every pending migration as one new batch.

    The subcommands inspect and undo migrations; run one with --help for more.
    """
    if ctx.invoked_subcommand is not None:
        return
    steps = _migrator(ctx, lock_timeout).migrate(step=step, pretend=pretend)
    _done(steps, "Nothing to migrate.")


@migrate.command("make")
@click.argument("name")
@click.option("--create", metavar="TABLE", help="Pre-fill a create-table template.")
@click.option("--table", metavar="TABLE", help="Pre-fill an alter-table template.")
@common_options
@click.pass_context
def make_command(
    ctx: click.Context, name: str, create: str | None, table: str | None
) -> None:
    """Write migrations/YYYY_MM_DD_HHMMSS_NAME.py (NAME in snake_case)."""
    settings = settings_for(ctx)
    path = make_migration(settings.migrations_path, name, create=create, table=table)
    click.echo(f"created {path}")


@migrate.command("status")
@common_options
@click.pass_context
def status_command(ctx: click.Context) -> None:
    """Show every migration: ran or pending, batch, missing or edited files."""
    migrator = _migrator(ctx)
    _render_status(migrator.status(), migrator)


def _render_status(status: Status, migrator: Migrator) -> None:
    for problem in status.problems:
        click.echo(f"warning: {problem}", err=True)
    if not status.folder_exists:
        click.echo(f"warning: no migrations folder at {migrator.folder}", err=True)
    if not status.rows:
        click.echo("No migrations found.")
        return

    # Plain aligned columns rather than a drawn table, written in one piece:
    # status must stay quick with thousands of migrations, and its output
    # easy to grep.
    width = max(len("Migration"), *(len(row.migration) for row in status.rows))
    state_width = max(len(label) for label, _ in _STATE_LABELS.values())
    header = f"{'Migration':<{width}}  Batch  {'Status':<{state_width}}  Notes"
    lines = [click.style(header, bold=True)]
    for row in status.rows:
        label, colour = _STATE_LABELS[row.state]
        notes = []
        if row.edited:
            notes.append(click.style("file edited since it ran", fg="yellow"))
        if row.detail:
            notes.append(row.detail)
        batch = "" if row.batch is None else str(row.batch)
        padded = f"{label:<{state_width}}  " if notes else label
        state = click.style(padded, fg=colour)
        lines.append(f"{row.migration:<{width}}  {batch:>5}  {state}{'; '.join(notes)}")
    click.echo("\n".join(lines))


@migrate.command("rollback")
@click.option(
    "--step",
    "steps",
    type=click.IntRange(min=1),
    metavar="N",
    help="Undo the last N migrations, newest first, whatever their batches.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Forget a recorded migration whose file is gone instead of stopping.",
)
@click.option("--pretend", is_flag=True, help="Print the SQL; change nothing.")
@_lock_timeout_option
@common_options
@click.pass_context
def rollback_command(
    ctx: click.Context,
    steps: int | None,
    force: bool,
    pretend: bool,
    lock_timeout: float | None,
) -> None:
    """Undo the last batch of migrations (or the last N with --step)."""
    migrator = _migrator(ctx, lock_timeout)
    _done(
        migrator.rollback(steps=steps, force=force, pretend=pretend),
        "Nothing to roll back.",
    )


@migrate.command("reset")
@click.option("--force", is_flag=True, help="Forget migrations whose file is gone.")
@click.option("--pretend", is_flag=True, help="Print the SQL; change nothing.")
@_lock_timeout_option
@common_options
@click.pass_context
def reset_command(
    ctx: click.Context, force: bool, pretend: bool, lock_timeout: float | None
) -> None:
    """Undo every applied migration, newest first."""
    migrator = _migrator(ctx, lock_timeout)
    _done(migrator.reset(force=force, pretend=pretend), "Nothing to roll back.")


@migrate.command("refresh")
@click.option(
    "--step",
    "steps",
    type=click.IntRange(min=1),
    metavar="N",
    help="Roll back only the last N migrations before migrating again.",
)
@click.option("--force", is_flag=True, help="Forget migrations whose file is gone.")
@_lock_timeout_option
@common_options
@click.pass_context
def refresh_command(
    ctx: click.Context, steps: int | None, force: bool, lock_timeout: float | None
) -> None:
    """Roll back every migration (or the last N), then migrate."""
    migrator = _migrator(ctx, lock_timeout)
    _done(migrator.refresh(steps=steps, force=force), "Nothing to migrate.")


@migrate.command("fresh")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@_lock_timeout_option
@common_options
@click.pass_context
def fresh_command(ctx: click.Context, force: bool, lock_timeout: float | None) -> None:
    """Drop every table of the database, then migrate (down() is not run)."""
    migrator = _migrator(ctx, lock_timeout)
    if not force:
        click.confirm(
            "Drop every table in the database and run all migrations again?",
            abort=True,
        )
    click.echo("Dropping every table, then migrating.")
    dropped, steps = migrator.fresh()
    _done(steps, "Nothing to migrate.")
    click.echo(f"Dropped {len(dropped)} table(s) and ran {len(steps)} migration(s).")


@migrate.command("install")
@_lock_timeout_option
@common_options
@click.pass_context
def install_command(ctx: click.Context, lock_timeout: float | None) -> None:
    """Create the migrations table."""
    migrator = _migrator(ctx, lock_timeout)
    if migrator.install():
        click.echo(f"Created table '{migrator.table}'.")
    else:
        click.echo(f"Table '{migrator.table}' already exists.")

"""``conveyor queue ...``: push, status, failed, retry, forget, flush,
clear, restart, workers, table, deploy; ``work`` is in
:mod:`conveyor.cli.work_command`."""

from __future__ import annotations

import json
import time

import click
from rich.table import Table

from conveyor.cli.options import common_options, console, settings_for
from conveyor.cli.work_command import work_command
from conveyor.commands import make_migration, open_store
from conveyor.failed.store import FailedJobStore
from conveyor.queue import inspection
from conveyor.queue.pushing import Queue
from conveyor.worker import deploy
from conveyor.worker.metrics import metrics_table_name
from conveyor.worker.options import check_timeout
from conveyor.worker.presence import request_restart


@click.group()
def queue() -> None:
    """Push jobs, run workers and look after failed jobs."""


queue.add_command(work_command)


@queue.command("push")
@click.argument("job")
@click.option("--data", default="null", metavar="JSON", help="The job's data, as JSON.")
@click.option("--queue", "queue_name", default=None, help="The queue to push onto.")
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Do not run it before this many seconds.",
)
@common_options
@click.pass_context
def push_command(
    ctx: click.Context, job: str, data: str, queue_name: str | None, delay: float
) -> None:
    """Push JOB (a job class name) with --data."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise click.BadParameter(
            f"not valid JSON: {exc}", param_hint="--data"
        ) from None
    client = Queue(settings=settings_for(ctx))
    job_id = client.later(delay, job, value, queue=queue_name)
    click.echo(f"pushed {job} as job {job_id}")


@queue.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Ready, delayed, running and failed jobs per queue; live workers."""
    store = open_store(settings_for(ctx))
    counts = inspection.queue_counts(store)
    workers = inspection.workers(store)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "queues": [vars(c) for c in counts],
                    "workers": [vars(w) for w in workers],
                },
                ensure_ascii=False,
            )
        )
        return
    table = Table(show_edge=False, header_style="bold")
    for name in (
        "Queue",
        "Ready",
        "Delayed",
        "Running",
        "Expired",
        "Failed",
        "Oldest ready",
    ):
        table.add_column(name, justify="left" if name == "Queue" else "right")
    for c in counts:
        age = "" if c.oldest_ready_age is None else f"{c.oldest_ready_age} s"
        table.add_row(
            c.queue,
            str(c.ready),
            str(c.delayed),
            str(c.running),
            str(c.expired),
            str(c.failed),
            age,
        )
    if counts:
        console().print(table)
    else:
        click.echo("No jobs.")
    click.echo(f"{len(workers)} worker(s) running.")


@queue.command("workers")
@common_options
@click.pass_context
def workers_command(ctx: click.Context) -> None:
    """Every worker: host, pid, queues, current job, started, last heartbeat."""
    rows = inspection.workers(open_store(settings_for(ctx)))
    if not rows:
        click.echo("No workers running.")
        return
    now = int(time.time())
    table = Table(show_edge=False, header_style="bold")
    for name in ("Host", "PID", "Queues", "Current job", "Up", "Last heartbeat"):
        table.add_column(name)
    for w in rows:
        table.add_row(
            w.host,
            str(w.pid),
            w.queues,
            "" if w.current_job is None else f"#{w.current_job}",
            f"{now - w.started_at} s",
            f"{now - w.heartbeat_at} s ago",
        )
    console().print(table)


@queue.group("failed", invoke_without_command=True)
@click.option("--queue", "queue_name", default=None, help="Only this queue.")
@common_options
@click.pass_context
def failed_group(ctx: click.Context, queue_name: str | None) -> None:
    """List failed jobs (see also: failed show ID)."""
    if ctx.invoked_subcommand is not None:
        return
    jobs = FailedJobStore(open_store(settings_for(ctx))).all(queue_name)
    if not jobs:
        click.echo("No failed jobs.")
        return
    table = Table(show_edge=False, header_style="bold")
    for name in ("ID", "Queue", "Job", "Failed at", "Error"):
        table.add_column(name, overflow="fold" if name == "Error" else "ellipsis")
    for job in jobs:
        table.add_row(
            str(job.id), job.queue, job.job, job.failed_at_text, job.error_line
        )
    console().print(table)


@failed_group.command("show")
@click.argument("failed_id", type=int)
@common_options
@click.pass_context
def failed_show_command(ctx: click.Context, failed_id: int) -> None:
    """Print a failed job's payload and trace."""
    job = FailedJobStore(open_store(settings_for(ctx))).find(failed_id)
    click.echo(f"id:        {job.id}\nuuid:      {job.uuid}\nqueue:     {job.queue}")
    click.echo(f"job:       {job.job}\nfailed at: {job.failed_at_text}")
    click.echo(f"payload:   {_readable(job.payload)}\n\n{job.exception.rstrip()}")


def _readable(payload: str) -> str:
    """The payload as JSON with its text unescaped (it is stored as ASCII),
    or as stored when it is not JSON."""
    try:
        return json.dumps(json.loads(payload), ensure_ascii=False)
    except ValueError:
        return payload


@queue.command("retry")
@click.argument("ids", nargs=-1)
@click.option("--queue", "queue_name", default=None, help="Every failed job of Q.")
@common_options
@click.pass_context
def retry_command(
    ctx: click.Context, ids: tuple[str, ...], queue_name: str | None
) -> None:
    """Push failed jobs back: IDs, 'all', or --queue=Q."""
    if ids == ("all",):
        selected = None
    elif ids:
        try:
            selected = [int(i) for i in ids]
        except ValueError:
            raise click.BadParameter(
                "give failed job ids, or 'all'", param_hint="IDS"
            ) from None
    elif queue_name is not None:
        selected = None
    else:
        raise click.UsageError("give failed job ids, 'all', or --queue=Q")
    new_ids = FailedJobStore(open_store(settings_for(ctx))).retry(selected, queue_name)
    click.echo(f"pushed {len(new_ids)} failed job(s) back onto their queues")


@queue.command("forget")
@click.argument("failed_id", type=int)
@common_options
@click.pass_context
def forget_command(ctx: click.Context, failed_id: int) -> None:
    """Delete one failed job."""
    FailedJobStore(open_store(settings_for(ctx))).forget(failed_id)
    click.echo(f"forgot failed job {failed_id}")


@queue.command("flush")
@click.option(
    "--hours",
    type=click.FloatRange(min=0),
    default=None,
    help="Only those that failed more than this many hours ago.",
)
@common_options
@click.pass_context
def flush_command(ctx: click.Context, hours: float | None) -> None:
    """Delete failed jobs."""
    count = FailedJobStore(open_store(settings_for(ctx))).flush(hours)
    click.echo(f"deleted {count} failed job(s)")


@queue.command("clear")
@click.option("--queue", "queue_name", default=None, help="Only this queue.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@common_options
@click.pass_context
def clear_command(ctx: click.Context, queue_name: str | None, force: bool) -> None:
    """Delete waiting jobs (jobs a worker holds are left alone)."""
    store = open_store(settings_for(ctx))
    if not force:
        which = f"queue {queue_name!r}" if queue_name else "every queue"
        click.confirm(f"Delete the waiting jobs of {which}?", abort=True)
    click.echo(f"deleted {inspection.clear(store, queue_name)} job(s)")


@queue.command("restart")
@common_options
@click.pass_context
def restart_command(ctx: click.Context) -> None:
    """Make every running worker exit after its current job."""
    count = request_restart(open_store(settings_for(ctx)))
    click.echo(f"asked {count} worker(s) to stop after their current job")


@queue.command("table")
@common_options
@click.pass_context
def table_command(ctx: click.Context) -> None:
    """Write a migration that creates the queue's tables."""
    settings = settings_for(ctx)
    tables = settings.queue
    path = make_migration(
        settings.migrations_path,
        "create_queue_tables",
        template="queue_tables",
        names={
            "jobs": tables.table,
            "failed": tables.failed_table,
            "workers": tables.workers_table,
            "metrics": metrics_table_name(tables.table),
        },
    )
    click.echo(f"created {path}")


@queue.command("deploy")
@click.option(
    "--supervisor",
    "kind",
    flag_value="supervisor",
    help="Print a Supervisor program block.",
)
@click.option(
    "--systemd", "kind", flag_value="systemd", help="Print a systemd unit template."
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="How many worker processes (Supervisor's numprocs, or with --one-unit "
    "the --processes of one queue work).",
)
@click.option(
    "--one-unit",
    is_flag=True,
    help="Run them as one program or unit, `queue work --processes N`, instead of N.",
)
@click.option(
    "--name", default="conveyor-worker", show_default=True, help="Program or unit name."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60,
    show_default=True,
    help="The workers' --timeout; sets the grace period.",
)
@click.argument("work_options", nargs=-1, type=click.UNPROCESSED)
@common_options
@click.pass_context
def deploy_command(
    ctx: click.Context,
    kind: str | None,
    processes: int,
    one_unit: bool,
    name: str,
    timeout: float,
    work_options: tuple[str, ...],
) -> None:
    """Print a process-manager config that runs the workers.

    Options after -- go to `queue work`, e.g.
    `conveyor queue deploy --systemd -- --queue=high,default --tries=3`.
    """
    if kind is None:
        raise click.UsageError("choose --supervisor or --systemd")
    settings = settings_for(ctx)
    # The workers would refuse to start, and the process manager would
    # restart them in a loop: say so now instead.
    check_timeout(timeout, settings.queue.retry_after)
    folder = (settings.source.parent if settings.source else settings.root).resolve()
    arguments = [f"--timeout={timeout:g}", *work_options]
    if one_unit:
        arguments.insert(0, f"--processes={processes}")
        processes = 1
    if kind == "supervisor":
        click.echo(
            deploy.supervisor_block(
                name=name,
                folder=folder,
                arguments=arguments,
                processes=processes,
                timeout=timeout,
            ),
            nl=False,
        )
    else:
        click.echo(
            deploy.systemd_unit(
                name=name,
                folder=folder,
                arguments=arguments,
                timeout=timeout,
                template=not one_unit,
            ),
            nl=False,
        )

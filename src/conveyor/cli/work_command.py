"""``conveyor queue work``: one worker, or with ``--processes N`` a
supervisor of N (see :mod:`conveyor.worker.supervisor`)."""

from __future__ import annotations

import os
import sys

import click
from click.core import ParameterSource

from conveyor.cli.options import (
    META_SETTINGS,
    common_arguments,
    common_options,
    settings_for,
)
from conveyor.cli.worker_logging import flush_worker_log, worker_logging
from conveyor.commands import open_store
from conveyor.exceptions import DatabaseRefused
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions, check_timeout
from conveyor.worker.prefetch import DEFAULT_PREFETCH
from conveyor.worker.signals import SignalHandlers, StopFlags
from conveyor.worker.supervisor import (
    EXIT_CONFIG,
    EXIT_RENEW,
    Supervisor,
    stop_with_supervisor,
)

#: The supervisor's own options, not passed on to its workers.
_NOT_PASSED_ON = {"processes", "supervised"}


def _int_list(value: str, option: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a list of whole seconds", param_hint=option
        ) from None
    if not numbers or any(n < 0 for n in numbers):
        raise click.BadParameter(
            f"{value!r}: give seconds, 0 or more", param_hint=option
        )
    return numbers


@click.command("work")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to run under one supervisor, each with the "
    "options given here; 1: this process is the worker.",
)
@click.option(
    "--queue",
    "queues",
    default=None,
    metavar="Q1,Q2",
    help="Queues to serve, in priority order (default: [queue] default).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60,
    show_default=True,
    help="Seconds one attempt may run before it is stopped; more than 0 and "
    "less than [queue] retry_after.",
)
@click.option(
    "--sleep",
    type=click.FloatRange(min=0),
    default=3,
    show_default=True,
    help="Seconds to wait when every queue is empty.",
)
@click.option(
    "--tries",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Attempts per job; 0: no limit.",
)
@click.option(
    "--backoff",
    default="0",
    show_default=True,
    metavar="S1,S2,...",
    help="Seconds before each retry; the last value repeats.",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=0),
    default=0,
    help="Stop after this many jobs.",
)
@click.option(
    "--max-time",
    type=click.FloatRange(min=0),
    default=0,
    help="Stop after this many seconds.",
)
@click.option(
    "--memory",
    type=click.IntRange(min=0),
    default=0,
    metavar="MB",
    help="Stop when the job process uses more memory than this.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="After SIGTERM, stop the running job after this long and put it "
    "back; 0: let it finish.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=DEFAULT_PREFETCH,
    show_default=True,
    help="Jobs claimed per round trip (each with its own lease; those not "
    "started go back at once when the worker stops); 1: one at a time.",
)
@click.option("--stop-when-empty", is_flag=True, help="Stop when the queues are empty.")
@click.option("--once", is_flag=True, help="Run at most one job, then stop.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line of text, or one JSON object, per job.",
)
@click.option("--supervised", type=int, default=None, hidden=True)
@common_options
@click.pass_context
def work_command(
    ctx: click.Context,
    processes: int,
    supervised: int | None,
    queues: str | None,
    timeout: float,
    sleep: float,
    tries: int,
    backoff: str,
    max_jobs: int,
    max_time: float,
    memory: int,
    grace: float,
    prefetch: int,
    stop_when_empty: bool,
    once: bool,
    log_format: str,
) -> None:
    """Run jobs as they arrive, until stopped (SIGTERM: after the current job)."""
    settings = settings_for(ctx)
    # An empty --queue= is a mistake to name, not a request for the default.
    given = settings.queue.default if queues is None else queues
    names = tuple(q.strip() for q in given.split(","))
    if not all(names):
        raise click.BadParameter(
            f"{queues!r} has an empty queue name", param_hint="--queue"
        )
    options = WorkerOptions(
        queues=names,
        timeout=timeout,
        sleep=sleep,
        tries=tries,
        backoff=_int_list(backoff, "--backoff"),
        max_jobs=max_jobs,
        max_time=max_time,
        memory=memory,
        grace=grace,
        prefetch=prefetch,
        stop_when_empty=stop_when_empty,
        once=once,
    )
    worker_logging(log_format, supervised=supervised is not None)
    if supervised is None and processes > 1:
        # Refused here, once, rather than by each worker in a restart loop.
        check_timeout(timeout, settings.queue.retry_after)
        ctx.exit(Supervisor(_worker_command(ctx), processes).run())
    if supervised is not None:
        stop_with_supervisor(supervised)

    flags = StopFlags()
    # Caught before the driver loads, so a stop during start-up is clean.
    with SignalHandlers(flags):
        try:
            stats = Worker(settings, options, open_store(settings), flags=flags).run()
        except DatabaseRefused as exc:
            if supervised is None:
                raise
            # Tells the supervisor that another worker would be refused alike
            # (a broken job module, by contrast, may be fixed by a deploy).
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_CONFIG)
        finally:
            flush_worker_log()
    if supervised is not None and stats.renew:
        ctx.exit(EXIT_RENEW)


def _worker_command(ctx: click.Context) -> list[str]:
    """The command line of each worker of a supervisor: a fresh
    ``queue work`` with the options this one was given, but
    ``--processes``."""
    if ctx.meta.get(META_SETTINGS) is not None:
        # Started as ``flask conveyor``: the workers load the application
        # the same way, for its settings.
        from conveyor.integrations.flask import ENV_APP

        app = os.environ.get(ENV_APP)
        program = ["-m", "flask", *(["--app", app] if app else []), "conveyor"]
    else:
        program = ["-m", "conveyor"]

    arguments = []
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name is None:
            continue
        if name in _NOT_PASSED_ON or not param.expose_value:
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        if param.is_flag:
            arguments += [param.opts[0]] if value else []
        else:
            arguments.append(f"{param.opts[0]}={value}")
    return [
        sys.executable,
        *program,
        "queue",
        "work",
        *arguments,
        *common_arguments(ctx),
    ]

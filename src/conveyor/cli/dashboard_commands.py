"""``conveyor dashboard``: serve the web dashboard."""

from __future__ import annotations

import ipaddress

import click

from conveyor.cli.options import common_options, settings_for


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("dashboard")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; any but loopback needs CONVEYOR_DASHBOARD_TOKEN.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds between two refreshes of an open page; 0 never refreshes.",
)
@common_options
@click.pass_context
def dashboard(ctx: click.Context, host: str, port: int, refresh: float) -> None:
    """Serve the web dashboard: queues, jobs, failed jobs, workers, migrations."""
    # Imported here so that other commands never need Flask.
    try:
        from werkzeug.serving import make_server

        from conveyor.dashboard import ENV_TOKEN, create_app, token_from_environment
    except ImportError:
        raise click.ClickException(
            "the dashboard needs Flask: pip install 'conveyor[dashboard]'"
        ) from None

    token = token_from_environment()
    if token is None and not is_loopback_host(host):
        raise click.ClickException(
            f"--host {host} serves the dashboard to other machines; set "
            f"{ENV_TOKEN} to the token they must sign in with"
        )
    app = create_app(settings_for(ctx), token=token, refresh_seconds=refresh)
    server = make_server(host, port, app, threaded=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"Conveyor dashboard on http://{shown}:{server.server_port}/ "
        f"({'token required' if token else 'local clients only'}); ^C stops it"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

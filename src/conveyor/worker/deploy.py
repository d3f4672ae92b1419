"""``queue deploy``: a ready Supervisor program block or systemd unit that
runs the workers, with a stop signal and grace period that let the running
job finish."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

#: Seconds added to --timeout before the process manager sends SIGKILL: time
#: for the last job's bookkeeping after its own timeout.
GRACE_MARGIN = 30


def work_command(arguments: list[str]) -> str:
    """The command line a process manager should run."""
    return shlex.join([sys.executable, "-m", "conveyor", "queue", "work", *arguments])


def supervisor_block(
    *, name: str, folder: Path, arguments: list[str], processes: int, timeout: float
) -> str:
    stop_wait = int(timeout) + GRACE_MARGIN
    return f"""\
[program:{name}]
command={work_command(arguments)}
directory={folder}
process_name=%(program_name)s_%(process_num)02d
numprocs={processes}
autostart=true
autorestart=true
; SIGTERM lets the running job finish; SIGKILL only after --timeout plus a
; margin. killasgroup takes the job's child process down with the worker.
stopsignal=TERM
stopwaitsecs={stop_wait}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=/var/log/{name}.log
"""


def systemd_unit(
    *,
    name: str,
    folder: Path,
    arguments: list[str],
    timeout: float,
    template: bool = True,
) -> str:
    """A unit template, one instance per worker; or, without ``template``,
    one plain unit (its command a supervisor of several workers)."""
    stop_wait = int(timeout) + GRACE_MARGIN
    if template:
        head = f"""\
# /etc/systemd/system/{name}@.service  (start N with: systemctl enable --now
# {name}@1 {name}@2 ...)
[Unit]
Description=Conveyor queue worker %i
"""
    else:
        head = f"""\
# /etc/systemd/system/{name}.service  (start with: systemctl enable --now {name})
[Unit]
Description=Conveyor queue workers
"""
    return (
        head
        + f"""\
After=network.target

[Service]
WorkingDirectory={folder}
ExecStart={work_command(arguments)}
Restart=always
RestartSec=1
# SIGTERM to the worker (or supervisor) lets the running jobs finish;
# whatever is left of the unit's processes is killed after --timeout plus a
# margin.
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec={stop_wait}

[Install]
WantedBy=multi-user.target
"""
    )

"""queue deploy: process-manager configs whose stop settings let the running
job finish."""

from __future__ import annotations

from pathlib import Path

from helpers import run_cli


def test_supervisor_block(tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text("[queue]\nretry_after = 180\n")
    result = run_cli(
        [
            "queue",
            "deploy",
            "--supervisor",
            "--processes",
            "4",
            "--timeout",
            "120",
            "--",
            "--queue=high,default",
            "--tries=3",
        ],
        cwd=tmp_path,
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "[program:conveyor-worker]"
    command = next(line for line in lines if line.startswith("command="))
    assert command.endswith(
        "-m conveyor queue work --timeout=120 --queue=high,default --tries=3"
    )
    assert f"directory={tmp_path.resolve()}" in lines
    assert "numprocs=4" in lines
    assert "stopsignal=TERM" in lines
    assert "stopwaitsecs=150" in lines
    assert "killasgroup=true" in lines


def test_systemd_unit(tmp_path: Path) -> None:
    result = run_cli(["queue", "deploy", "--systemd", "--timeout", "60"], cwd=tmp_path)

    assert result.exit_code == 0, result.output
    assert "KillSignal=SIGTERM" in result.stdout
    assert "TimeoutStopSec=90" in result.stdout
    assert f"WorkingDirectory={tmp_path.resolve()}" in result.stdout


def test_one_unit_runs_the_workers_under_one_supervisor(tmp_path: Path) -> None:
    args = ["queue", "deploy", "--processes=3", "--one-unit", "--", "--tries=2"]

    supervisor = run_cli([*args[:2], "--supervisor", *args[2:]], cwd=tmp_path)
    systemd = run_cli([*args[:2], "--systemd", *args[2:]], cwd=tmp_path)

    assert supervisor.exit_code == 0, supervisor.output
    lines = supervisor.stdout.splitlines()
    assert "numprocs=1" in lines
    command = next(line for line in lines if line.startswith("command="))
    assert command.endswith("queue work --processes=3 --timeout=60 --tries=2")
    assert systemd.exit_code == 0, systemd.output
    assert "/etc/systemd/system/conveyor-worker.service" in systemd.stdout
    assert "%i" not in systemd.stdout
    exec_start = next(
        line for line in systemd.stdout.splitlines() if line.startswith("ExecStart=")
    )
    assert exec_start.endswith("queue work --processes=3 --timeout=60 --tries=2")
    assert "KillMode=mixed" in systemd.stdout


def test_a_kind_is_required(tmp_path: Path) -> None:
    result = run_cli(["queue", "deploy"], cwd=tmp_path)

    assert result.exit_code == 2
    assert "choose --supervisor or --systemd" in result.stderr


def test_a_timeout_the_workers_would_refuse_is_refused_here(tmp_path: Path) -> None:
    """With the default ``retry_after`` of 90 s, workers would refuse
    ``--timeout=120`` and the process manager would restart them in a loop:
    no config is printed, and the error says what to set."""
    result = run_cli(["queue", "deploy", "--systemd", "--timeout", "120"], cwd=tmp_path)

    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "--timeout=120 must be more than 0 and less than retry_after (90 s)" in line
    assert "[queue] retry_after" in line

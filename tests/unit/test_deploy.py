"""queue deploy: process-manager configs whose stop settings let the running
job finish."""

from __future__ import annotations

from pathlib import Path

from helpers import run_cli


def test_supervisor_block(tmp_path: Path) -> None:
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


def test_a_kind_is_required(tmp_path: Path) -> None:
    result = run_cli(["queue", "deploy"], cwd=tmp_path)

    assert result.exit_code == 2
    assert "choose --supervisor or --systemd" in result.stderr

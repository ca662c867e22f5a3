"""Test servers of our own that run as child processes of the tests.

A child binds port 0 on 127.0.0.1, prints the port(s) it got on its first line of
stdout (so there is no race for a "free" port), and stops when its stdin closes,
so it cannot outlive the test process that started it.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 15


def start_child(
    module: str, log_file: Path, args: tuple[str, ...] = (), env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[str], list[int]]:
    """Run `python -m module args...`; returns the process and the ports it reported."""
    with log_file.open("a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": _python_path(), **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        return process, _read_ports(process, module, log_file)
    except BaseException:
        stop_child(process)
        raise


def stop_child(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        assert process.stdin is not None
        process.stdin.close()  # the child stops when its stdin closes
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT_S)
    if process.stdout is not None:
        process.stdout.close()


def report_ports_and_wait(*ports: int) -> None:
    """The child's side: say where it listens, then block until the parent lets go."""
    print(*ports, flush=True)
    sys.stdin.read()


def _python_path() -> str:
    # The child must import `tests` (from the repo root) and `keyledger` (from operator/).
    parts = [str(REPO_ROOT), str(REPO_ROOT / "operator"), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def _read_ports(process: subprocess.Popen[str], module: str, log_file: Path) -> list[int]:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], _START_TIMEOUT_S)
    line = process.stdout.readline() if ready else ""
    if not line.split() or not all(word.isdigit() for word in line.split()):
        tail = log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(
            f"{module} did not report its port within {_START_TIMEOUT_S} s "
            f"(exit code {process.poll()}); its log:\n{tail}"
        )
    return [int(word) for word in line.split()]

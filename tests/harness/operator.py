"""The real keyledger operator (kopf) as a child process, as its ServiceAccount."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class OperatorProcess:
    """One operator process; can be stopped, killed and started again on the same state."""

    kubeconfig: Path
    database_url: str
    data_dir: Path
    log_path: Path
    # Namespace patterns this operator serves (tests keep operators apart by prefix).
    namespaces: tuple[str, ...] = ("t-*",)
    metrics_port: int = 0
    verbose: bool = True
    # False: peer with other operators through KEYLEDGER_PEERING (extra_env).
    standalone: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    # What `python -m` runs: the operator's CLI, or a test launcher that wraps it.
    module: str = "keyledger.cli.main"
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KEYLEDGER_DATABASE_URL": self.database_url,
            "KEYLEDGER_DATA_DIR": str(self.data_dir),
            "KEYLEDGER_OPERATOR_NAMESPACE": "keyledger-system",
            "PYTHONUNBUFFERED": "1",
            "KEYLEDGER_DRIFT_INTERVAL": "3s",
            "KEYLEDGER_NAMESPACES": ",".join(self.namespaces),
            "KEYLEDGER_METRICS_PORT": str(self.metrics_port),
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                self.module,
                "run",
                *(["--standalone"] if self.standalone else []),
                *(["--verbose"] if self.verbose else []),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        log.close()

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL: the crash a test wants, no cleanup at all."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def assert_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"operator exited; log tail:\n{self.log_tail()}")

    @property
    def keystore_dir(self) -> Path:
        return self.data_dir / "local-keystores"

    def metrics_text(self) -> str:
        """The operator's /metrics page as Prometheus scrapes it."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as reply:
            return str(reply.read().decode())

    def metrics(self) -> dict[str, float]:
        """The operator's Prometheus samples, by name with labels."""
        text = self.metrics_text()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            self.assert_running()
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} not in operator log; tail:\n{self.log_tail()}")

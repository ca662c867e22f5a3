"""A control plane, PostgreSQL, OpenBao and the operator for the cluster benchmarks,
started with the test harness; keys created in bulk; readiness and process cost.

Everything lives under one temporary directory (prefix `keyledger-bench-`) and is
stopped when the `Bench` context ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keyledger.api import TENANT_LABEL
from keyledger.store.engine import upgrade_database
from tests.contract.backends.vault import STATE_MOUNT, STATE_PATH, TRANSIT_MOUNT, prepare_server
from tests.fixtures_operator import (
    encryption_key,
    install_crds_and_rbac,
    new_operator,
    provider_manifest,
)
from tests.harness.controlplane import (
    ControlPlane,
    build_testbin,
    kubectl,
    start_control_plane,
    stop_control_plane,
)
from tests.harness.openbao import OpenBaoServer, start_openbao, stop_openbao
from tests.harness.operator import OperatorProcess
from tests.harness.postgres import PostgresServer, create_database, start_postgres, stop_postgres

CLK_TCK = os.sysconf("SC_CLK_TCK")
CHUNK = 250  # keys per `kubectl create`


@dataclass
class Bench:
    workdir: Path
    cp: ControlPlane
    postgres: PostgresServer
    stack: ExitStack
    bao: OpenBaoServer | None = None
    bao_token: str = ""
    processes: list[subprocess.Popen[bytes] | OperatorProcess] = field(default_factory=list)

    def database(self) -> str:
        url = create_database(self.postgres, f"bench_{uuid.uuid4().hex[:8]}")
        upgrade_database(url)
        return url

    def namespace(self, prefix: str) -> tuple[str, str]:
        """A new namespace bound to a new tenant: (namespace, tenant)."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        tenant = f"tenant-{name}"
        kubectl(
            self.cp,
            "apply",
            "-f",
            "-",
            input=yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": {TENANT_LABEL: tenant}},
                }
            ),
        )
        return name, tenant

    def operator(self, database: str, namespace: str) -> OperatorProcess:
        """keyledger serving `namespace`, with the default drift interval (10m)."""
        state = Path(tempfile.mkdtemp(prefix="operator-", dir=self.workdir))
        process = new_operator(
            self.cp, database, state, (namespace,), KEYLEDGER_DRIFT_INTERVAL="10m"
        )
        process.verbose = False
        process.start()
        return process

    def openbao(self) -> OpenBaoServer:
        if self.bao is None:
            self.bao = start_openbao(self.workdir)
            self.stack.callback(stop_openbao, self.bao)
            self.bao_token = prepare_server(self.bao)
        return self.bao

    def provider(self, kind: str, namespace: str) -> dict[str, str]:
        """A Ready provider of `kind` (local, vault) for keys in `namespace`: its providerRef."""
        name = f"bench-{kind}"
        if kind == "local":
            spec: dict[str, Any] = {"local": {"keystore": f"bench-{namespace}"}}
        else:
            bao = self.openbao()
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "vault-token", "namespace": namespace},
                "stringData": {"token": self.bao_token},
            }
            kubectl(self.cp, "apply", "-f", "-", input=yaml.safe_dump(secret))
            spec = {
                "vault": {
                    "address": bao.address,
                    "mount": TRANSIT_MOUNT,
                    "stateMount": STATE_MOUNT,
                    "statePath": STATE_PATH,
                    "auth": {"method": "token"},
                },
                "credentialsRef": {"name": "vault-token"},
            }
        manifest = provider_manifest(name, spec, namespace)
        kubectl(self.cp, "apply", "-f", "-", input=yaml.safe_dump(manifest))
        return {"kind": "KeyProvider", "name": name}

    def wait_provider_ready(self, ref: dict[str, str], namespace: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = json.loads(
                kubectl(self.cp, "get", "kp", ref["name"], "-n", namespace, "-o", "json").stdout
            )
            if _ready(found):
                return
            time.sleep(0.5)
        raise RuntimeError(f"provider {ref['name']} never became Ready")

    def create_keys(
        self, namespace: str, tenant: str, provider: dict[str, str], count: int
    ) -> float:
        """Create `count` EncryptionKeys as fast as kubectl can; returns when it started."""
        items = []
        for n in range(count):
            key = encryption_key(
                f"key-{n:05d}",
                namespace,
                tenant=tenant,
                provider="unused",
                rotation={"period": "90d"},
                expiry={"after": "365d"},
            )
            key["spec"]["providerRef"] = provider
            items.append(key)
        started = time.monotonic()
        for chunk in range(0, count, CHUNK):
            batch = {"apiVersion": "v1", "kind": "List", "items": items[chunk : chunk + CHUNK]}
            kubectl(self.cp, "create", "-f", "-", input=yaml.safe_dump(batch))
        return started

    def wait_all_ready(
        self, namespace: str, count: int, timeout: float, alive: OperatorProcess | None = None
    ) -> float:
        """Poll until `count` keys in `namespace` are Ready; returns the moment they were."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_count(namespace) >= count:
                return time.monotonic()
            if alive is not None:
                alive.assert_running()
            time.sleep(1.0)
        raise RuntimeError(f"not all {count} keys in {namespace} became Ready in {timeout} s")

    def ready_count(self, namespace: str) -> int:
        listing = kubectl(
            self.cp,
            "get",
            "ek",
            "-n",
            namespace,
            "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        ).stdout
        return sum(1 for line in listing.splitlines() if line.strip() == "True")

    def delete_namespace(self, namespace: str) -> None:
        kubectl(self.cp, "delete", "namespace", namespace, "--wait=false", check=False)


@contextmanager
def bench_cluster() -> Iterator[Bench]:
    # SIGTERM unwinds like an exception, so that every server started here stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keyledger-bench-")))
        build_testbin()
        cp = start_control_plane(workdir / "control-plane")
        stack.callback(stop_control_plane, cp)
        install_crds_and_rbac(cp)
        postgres = start_postgres(workdir)
        stack.callback(stop_postgres, postgres)
        yield Bench(workdir, cp, postgres, stack)


def _ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions", [])
    )


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    rss_mb: float


def usage(pid: int) -> Usage:
    """CPU seconds (user + system) the process has used so far, and its RSS now."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return Usage(cpu, rss_kb / 1024)


def python() -> str:
    return sys.executable

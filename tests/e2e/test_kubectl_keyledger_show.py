"""`kubectl keyledger status` and `history` as a user runs them: through kubectl's
plugin lookup, against the real control plane, with exit codes a script can use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures_operator import annotate, wait_condition, wait_for, wait_not_ready
from tests.harness.controlplane import ControlPlane
from tests.harness.net import free_port
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

VENV_BIN = Path(sys.executable).parent


def kubectl_keyledger(
    cp: ControlPlane, *args: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubectl keyledger ...`, found by kubectl on PATH as kubectl-keyledger."""
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(kubeconfig or cp.kubeconfig),
    }
    return subprocess.run(
        [cp.kubectl_path, "keyledger", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _rows(table: str) -> list[dict[str, str]]:
    """A table as printed (columns split on runs of 3+ spaces), keyed by header."""
    lines = [line for line in table.splitlines() if line.strip()]
    header = lines[0]
    starts = [
        i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 2 : i] == "  ")
    ]
    headers = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return [
        {h: line[a:b].strip() for h, a, b in zip(headers, starts, [*starts[1:], None], strict=True)}
        for line in lines[1:]
    ]


def test_status_shows_keys_and_exits_by_readiness(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Callable[..., dict[str, Any]],
    namespace: str,
) -> None:
    make_key("phi", rotation={"period": "30d"}, rollback={"window": "7d"})
    wait_condition(crds, "ek", "phi", "Ready", namespace=namespace, operator=operator)
    annotate(crds, namespace, "phi", rotate_requested_at="show-1")
    wait_condition(crds, "ek", "phi", "RollbackAvailable", namespace=namespace, operator=operator)

    shown = kubectl_keyledger(crds, "status", "-n", namespace)
    print(shown.stdout)
    assert shown.returncode == 0, shown.stderr
    [row] = _rows(shown.stdout)
    assert row["NAME"] == "phi" and row["PHASE"] == "ACTIVE" and row["VERSION"] == "2"
    assert row["READY"] == "True"
    assert row["NEXT ROTATION"].startswith("20") and row["ROLLBACK UNTIL"].startswith("20")
    assert "RollbackAvailable" in row["CONDITIONS"]

    as_json = kubectl_keyledger(crds, "status", "-n", namespace, "-o", "json")
    [key] = json.loads(as_json.stdout)
    assert key["version"] == 2 and key["ready"] == "True" and key["namespace"] == namespace

    # A key waiting on a provider that does not exist: not Ready, exit code 1.
    make_key("orphan", providerRef={"kind": "ClusterKeyProvider", "name": "nowhere"})
    wait_not_ready(crds, "orphan", "ProviderNotFound", namespace=namespace, operator=operator)
    waiting = kubectl_keyledger(crds, "status", "orphan", "-n", namespace)
    assert waiting.returncode == 1
    assert _rows(waiting.stdout)[0]["READY"] == "False (ProviderNotFound)"

    everywhere = kubectl_keyledger(crds, "status", "-A", "-o", "yaml")
    listed = {(k["namespace"], k["name"]) for k in yaml.safe_load(everywhere.stdout)}
    assert {(namespace, "phi"), (namespace, "orphan")} <= listed
    assert "NAMESPACE" in kubectl_keyledger(crds, "status", "-A").stdout.splitlines()[0]

    missing = kubectl_keyledger(crds, "status", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert f"no EncryptionKey nope in namespace {namespace}" in missing.stderr
    assert f"kubectl keyledger status -n {namespace}" in missing.stderr


def test_history_shows_versions_and_the_events_that_changed_them(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Callable[..., dict[str, Any]],
    namespace: str,
) -> None:
    make_key("audit", rollback={"window": "7d"})
    wait_condition(crds, "ek", "audit", "Ready", namespace=namespace, operator=operator)
    annotate(crds, namespace, "audit", rotate_requested_at="hist-1")
    wait_condition(crds, "ek", "audit", "RollbackAvailable", namespace=namespace, operator=operator)

    def history() -> dict[str, Any] | None:
        shown = kubectl_keyledger(crds, "history", "audit", "-n", namespace, "-o", "yaml")
        data: dict[str, Any] = yaml.safe_load(shown.stdout)
        return data if "Rotated" in [e["reason"] for e in data["events"]] else None

    data = wait_for(history, "the Rotated event in history", operator)
    assert [(v["version"], v["phase"]) for v in data["versions"]] == [(2, "ACTIVE"), (1, "ROTATED")]
    assert data["versions"][1]["rollbackExpiresAt"]
    times = [e["time"] for e in data["events"]]
    assert times == sorted(times)

    table = kubectl_keyledger(crds, "history", "audit", "-n", namespace)
    print(table.stdout)
    assert table.returncode == 0
    versions, _, events = table.stdout.partition("\n\nEVENTS\n")
    assert [(r["VERSION"], r["PHASE"]) for r in _rows(versions)] == [
        ("2", "ACTIVE"),
        ("1", "ROTATED"),
    ]
    assert "Rotated" in {r["REASON"] for r in _rows(events)}

    missing = kubectl_keyledger(crds, "history", "nope", "-n", namespace)
    assert missing.returncode == 1 and "no EncryptionKey nope" in missing.stderr


def test_help_and_an_unreachable_cluster(crds: ControlPlane, tmp_path: Path) -> None:
    for command in ("status", "history", "rotate", "rollback", "compromise", "pause", "db"):
        shown = kubectl_keyledger(crds, command, "--help")
        assert shown.returncode == 0 and "usage:" in shown.stdout, command

    nowhere = tmp_path / "kubeconfig"
    nowhere.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}
                ],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    down = kubectl_keyledger(crds, "status", "-A", kubeconfig=nowhere)
    assert down.returncode == 3
    assert "cannot reach the Kubernetes API" in down.stderr and "KUBECONFIG" in down.stderr

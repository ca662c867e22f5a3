"""`kubectl apply -k manifests/overlays/<name>`: every overlay renders with kubectl's
kustomize and the real API server accepts every object (dry run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import REPO_ROOT

pytestmark = [pytest.mark.cluster]

OVERLAYS = sorted(p.name for p in (REPO_ROOT / "manifests" / "overlays").iterdir() if p.is_dir())
PEERING_CRD = "clusterkopfpeerings.kopf.dev"


def render(cp: ControlPlane, overlay: str) -> list[dict[str, Any]]:
    out = kubectl(cp, "kustomize", str(REPO_ROOT / "manifests" / "overlays" / overlay)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(
        f"no {kind}/{name} in {[(o['kind'], o['metadata']['name']) for o in objects]}"
    )


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.fixture(scope="module")
def peering_crd(crds: ControlPlane) -> ControlPlane:
    """Custom resources in an overlay need their CRDs established before a dry run."""
    peering = next(yaml.safe_load_all((REPO_ROOT / "manifests/base/peering.yaml").read_text()))
    kubectl(crds, "apply", "--server-side", "-f", "-", input=yaml.safe_dump(peering))
    kubectl(crds, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{PEERING_CRD}")
    return crds


def test_there_are_dev_and_production_overlays() -> None:
    assert OVERLAYS == ["dev", "production"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_the_api_server_accepts_it(
    peering_crd: ControlPlane, overlay: str, tmp_path: Path
) -> None:
    objects = render(peering_crd, overlay)
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    result = kubectl(
        peering_crd,
        "apply",
        "--dry-run=server",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(rendered),
    )
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(objects), result.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_operator_runs_non_root_read_only_with_probes_and_peering(
    control_plane: ControlPlane, overlay: str
) -> None:
    objects = render(control_plane, overlay)
    pod = find(objects, "Deployment", "keyledger-operator")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    peering = env_of(container)["KEYLEDGER_PEERING"]
    assert find(objects, "ClusterKopfPeering", peering)
    rules = find(objects, "ClusterRole", "keyledger-operator")["rules"]
    assert any("clusterkopfpeerings" in r["resources"] and "patch" in r["verbs"] for r in rules)


def test_production_runs_two_peered_replicas_on_postgresql_migrated_by_a_job(
    control_plane: ControlPlane,
) -> None:
    objects = render(control_plane, "production")
    deployment = find(objects, "Deployment", "keyledger-operator")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env["KEYLEDGER_DATABASE_URL"]["secretKeyRef"]["name"] == "keyledger-database"
    assert env["KEYLEDGER_MIGRATE_ON_START"] == "false"
    job = find(objects, "Job", "keyledger-db-upgrade")["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["db", "upgrade"]
    assert find(objects, "PodDisruptionBudget", "keyledger-operator")
    assert find(objects, "NetworkPolicy", "keyledger-operator")
    assert find(objects, "Service", "keyledger-metrics")


def test_dev_runs_one_replica_on_sqlite_with_the_local_provider(
    control_plane: ControlPlane,
) -> None:
    objects = render(control_plane, "dev")
    deployment = find(objects, "Deployment", "keyledger-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert "KEYLEDGER_DATABASE_URL" not in env
    assert env["KEYLEDGER_MIGRATE_ON_START"] == "true"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"] == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": "keyledger-data"},
    }
    assert find(objects, "ClusterKeyProvider", "local-dev")["spec"] == {
        "local": {"keystore": "dev"}
    }
    assert not [o for o in objects if o["kind"] == "Job"]


def test_monitoring_renders_the_rule_and_the_dashboard_config_map(
    control_plane: ControlPlane,
) -> None:
    out = kubectl(control_plane, "kustomize", str(REPO_ROOT / "manifests" / "monitoring")).stdout
    objects = [doc for doc in yaml.safe_load_all(out) if doc]
    rule = find(objects, "PrometheusRule", "keyledger")
    assert rule["spec"]["groups"]
    dashboard = find(objects, "ConfigMap", "keyledger-grafana-dashboard")
    assert dashboard["metadata"]["labels"] == {"grafana_dashboard": "1"}
    shipped = (REPO_ROOT / "manifests" / "monitoring" / "keyledger-dashboard.json").read_text()
    assert json.loads(dashboard["data"]["keyledger-dashboard.json"]) == json.loads(shipped)

"""kube-apiserver stopped and started again in the middle of a rotation burst.

On a control plane of the test's own (so that no other test sees the outage): the
operator's watches resume, every rotate request made before, during (in flight)
and after the outage is carried out exactly once, and the KMS holds exactly the
versions the ledger records.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.providers.local.keystore import read_keystore
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from tests.fixtures_operator import (
    LOCAL_PROVIDER,
    annotate,
    apply,
    encryption_key,
    get,
    install_crds_and_rbac,
    new_operator,
    provider_manifest,
    tenant_namespace,
    wait_condition,
    wait_for,
)
from tests.harness.controlplane import (
    ControlPlane,
    start_apiserver,
    start_control_plane,
    stop_apiserver,
    stop_control_plane,
)
from tests.harness.operator import OperatorProcess
from tests.harness.postgres import PostgresServer, create_database
from tests.ledger_checks import handled_counts, versions_by_key

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

KEYS = int(os.environ.get("KEYLEDGER_RESTART_KEYS", "4"))
OUTAGES = int(os.environ.get("KEYLEDGER_RESTART_OUTAGES", "1"))
# Long enough that the operator's watches and writes fail and must be retried.
OUTAGE_S = float(os.environ.get("KEYLEDGER_RESTART_OUTAGE_S", "5"))


@dataclass
class OwnCluster:
    cp: ControlPlane
    operator: OperatorProcess
    sessions: sessionmaker[Session]
    namespace: str
    tenant: str


@pytest.fixture
def own_cluster(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[OwnCluster]:
    cp = start_control_plane(tmp_path / "control-plane")
    try:
        install_crds_and_rbac(cp)
        database = create_database(postgres_server, f"keyledger_restart_{uuid.uuid4().hex[:8]}")
        upgrade_database(database)
        tenant = f"restart-{uuid.uuid4().hex[:8]}"
        namespace = tenant_namespace(cp, f"r-{uuid.uuid4().hex[:8]}", tenant)
        operator = new_operator(cp, database, tmp_path / "operator", ("r-*",))
        operator.start()
        try:
            apply(cp, provider_manifest(LOCAL_PROVIDER, {"local": {"keystore": "tests"}}))
            wait_condition(cp, "ckp", LOCAL_PROVIDER, "Ready", namespace=None, operator=operator)
            yield OwnCluster(
                cp, operator, make_session_factory(make_engine(database)), namespace, tenant
            )
        finally:
            operator.stop()
            print(f"\nrestart operator log: {operator.log_path}")
    finally:
        stop_control_plane(cp)


def keystore_versions(operator: OperatorProcess, tenant: str) -> dict[str, int]:
    """Key name -> how many versions the local keystore holds for it."""
    found: dict[str, int] = {}
    for path in operator.keystore_dir.glob("*.json"):
        for entry in read_keystore(path).values():
            labels = entry.get("labels", {})
            if labels.get("tenant") == tenant:
                found[labels["key-name"]] = found.get(labels["key-name"], 0) + 1
    return found


def all_at(cp: ControlPlane, namespace: str, names: list[str], token: str) -> bool:
    for name in names:
        status = get(cp, "ek", name, namespace).get("status", {})
        if (status.get("lastHandledRequests") or {}).get("rotate") != token:
            return False
    return True


def test_watches_resume_and_every_rotation_happens_once(own_cluster: OwnCluster) -> None:
    cp, operator, namespace, tenant = (
        own_cluster.cp,
        own_cluster.operator,
        own_cluster.namespace,
        own_cluster.tenant,
    )
    names = [f"burst-{i}" for i in range(KEYS)]
    for name in names:
        apply(cp, encryption_key(name, namespace, tenant=tenant, provider=LOCAL_PROVIDER))
    for name in names:
        wait_condition(cp, "ek", name, "Ready", namespace=namespace, operator=operator)

    tokens = []
    for outage in range(1, OUTAGES + 1):
        # A burst, then the API server goes away while the operator is busy with it:
        # KMS and ledger steps succeed, status patches and watches fail.
        before = f"before-outage-{outage}"
        tokens.append(before)
        for name in names:
            annotate(cp, namespace, name, rotate_requested_at=before)
        command = stop_apiserver(cp)
        time.sleep(OUTAGE_S)
        start_apiserver(cp, command)
        # Requests made after the restart reach the operator only through resumed watches.
        after = f"after-outage-{outage}"
        tokens.append(after)
        for name in names:
            annotate(cp, namespace, name, rotate_requested_at=after)
        wait_for(
            partial(all_at, cp, namespace, names, after),
            f"every key handled {after}",
            operator,
            timeout=float(os.environ.get("KEYLEDGER_SOAK_TIMEOUT_S", "120")),
        )

    last = len(tokens) + 1
    expected = [(last, "ACTIVE")] + [(v, "ROTATED") for v in range(last - 1, 0, -1)]
    assert versions_by_key(own_cluster.sessions, tenant) == {name: expected for name in names}
    assert handled_counts(own_cluster.sessions, tenant, "rotate") == {
        (name, token): 1 for name in names for token in tokens
    }
    assert keystore_versions(operator, tenant) == {name: last for name in names}
    for name in names:
        ready = get(cp, "ek", name, namespace)["status"]["conditions"]
        assert [c["status"] for c in ready if c["type"] == "Ready"] == ["True"]

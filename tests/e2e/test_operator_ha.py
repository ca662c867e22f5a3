"""Two operator replicas peered through a ClusterKopfPeering, as the production
overlay runs them, on Vault transit (OpenBao): one acts, the other stands by;
SIGKILL of the active one hands its keys over within seconds, and across the
hand-over no key is rotated twice and no second KMS key is made."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyEventType
from keyledger.store.repository import KeyLedger
from tests.contract.backends.vault import TRANSIT_MOUNT, prepare_server, vault_options
from tests.fixtures_operator import (
    annotate,
    apply,
    encryption_key,
    get,
    new_operator,
    statuses,
    tenant_namespace,
    wait_condition,
    wait_for,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.openbao import OpenBaoServer, start_openbao, stop_openbao
from tests.harness.operator import REPO_ROOT, OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

# Seconds a killed replica's keep-alive is still believed (KEYLEDGER_PEERING_LIFETIME).
LIFETIME_S = 6
# "Within seconds": the lifetime, a keep-alive round and kopf's resume, with room for
# a loaded 2-core machine. A deadline, not a measurement.
HANDOVER_DEADLINE_S = 45
# Several drift intervals (3 s in tests): long enough for a stray second pass to show.
SETTLE_S = 8
RESUMED = "Resuming operations after the pause"
PAUSED = "Pausing operations in favour of"
SCHEDULED_PASSES = 'keyledger_reconcile_duration_seconds_count{pass="scheduled"}'


@dataclass
class Pair:
    active: OperatorProcess
    standby: OperatorProcess
    namespace: str
    bao: OpenBaoServer
    provider: dict[str, str]
    tenant: str
    peering: str


def _install_peering(cp: ControlPlane, name: str) -> None:
    crd = next(yaml.safe_load_all((REPO_ROOT / "manifests/base/peering.yaml").read_text()))
    kubectl(cp, "apply", "--server-side", "-f", "-", input=yaml.safe_dump(crd))
    kubectl(
        cp, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}"
    )
    apply(
        cp, {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    )


def _replica(
    cp: ControlPlane,
    database: str,
    state: Path,
    namespace: str,
    peering: str,
    priority: int,
    **env: str,
) -> OperatorProcess:
    process = new_operator(
        cp,
        database,
        state,
        (namespace,),
        KEYLEDGER_PEERING=peering,
        KEYLEDGER_PEERING_PRIORITY=str(priority),
        KEYLEDGER_PEERING_LIFETIME=str(LIFETIME_S),
        **env,
    )
    process.standalone = False
    return process


@pytest.fixture
def pair(
    request: pytest.FixtureRequest, crds: ControlPlane, operator_database: str, tmp_path: Path
) -> Iterator[Pair]:
    """Two replicas in a peering of their own; the active one with the failpoints
    (keyledger.failpoints) given as the fixture's parameter, if any."""
    failpoints: str = getattr(request, "param", "")
    peering = f"ha-{uuid.uuid4().hex[:8]}"
    tenant = f"ha-{uuid.uuid4().hex[:6]}"
    namespace = tenant_namespace(crds, f"ha-{uuid.uuid4().hex[:8]}", tenant)
    _install_peering(crds, peering)
    bao = start_openbao(tmp_path)
    token = prepare_server(bao)
    apply(
        crds,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vault-token", "namespace": namespace},
            "stringData": {"token": token},
        },
    )
    active = _replica(
        crds,
        operator_database,
        tmp_path / "a",
        namespace,
        peering,
        200,
        KEYLEDGER_FAILPOINTS=failpoints,
    )
    standby = _replica(crds, operator_database, tmp_path / "b", namespace, peering, 100)
    active.start()
    try:
        active.wait_for_log(RESUMED)  # alone in the peering: it acts
        standby.start()
        provider = {"kind": "KeyProvider", "name": "vault"}
        apply(
            crds,
            {
                "apiVersion": "keyledger.io/v1alpha1",
                "kind": "KeyProvider",
                "metadata": {"name": "vault", "namespace": namespace},
                "spec": {
                    "vault": vault_options(bao.address),
                    "credentialsRef": {"name": "vault-token"},
                },
            },
        )
        wait_condition(crds, "kp", "vault", "Ready", namespace=namespace, operator=active)
        yield Pair(active, standby, namespace, bao, provider, tenant, peering)
    finally:
        for process in (active, standby):
            process.stop()
            print(f"\nHA operator log: {process.log_path}")
        kubectl(crds, "delete", "ek", "--all", "-n", namespace, "--wait=false", check=False)
        stop_openbao(bao)


def _key(pair: Pair, name: str, tenant: str) -> dict[str, Any]:
    key = encryption_key(name, pair.namespace, tenant=tenant, provider="unused")
    key["spec"]["providerRef"] = pair.provider
    return key


def _rotated(cp: ControlPlane, namespace: str, name: str, token: str) -> bool:
    status = get(cp, "ek", name, namespace).get("status") or {}
    return (status.get("lastHandledRequests") or {}).get("rotate") == token


def _transit_versions(bao: OpenBaoServer) -> dict[str, int]:
    """Every transit key in the server and its latest version."""
    root = bao.root_client()
    names = root.secrets.transit.list_keys(mount_point=TRANSIT_MOUNT)["data"]["keys"]
    return {
        name: int(
            root.secrets.transit.read_key(name, mount_point=TRANSIT_MOUNT)["data"]["latest_version"]
        )
        for name in names
    }


def test_standby_takes_over_within_seconds_without_rotating_twice_or_making_a_second_key(
    crds: ControlPlane, pair: Pair, ledger_sessions: sessionmaker[Session]
) -> None:
    ns, tenant = pair.namespace, pair.tenant
    for name in ("alpha", "beta", "gamma"):
        apply(crds, _key(pair, name, tenant))
    for name in ("alpha", "beta", "gamma"):
        wait_condition(crds, "ek", name, "Ready", namespace=ns, operator=pair.active)
    annotate(crds, ns, "alpha", rotate_requested_at="before-kill")
    wait_for(lambda: _rotated(crds, ns, "alpha", "before-kill"), "alpha rotated", pair.active)

    # Only the active replica acted; the standby is running, paused by peering.
    pair.standby.assert_running()
    standby_log = pair.standby.log_text()
    assert RESUMED not in standby_log
    for name in ("alpha", "beta", "gamma"):
        assert f"[{ns}/{name}]" in pair.active.log_text()
        assert f"[{ns}/{name}]" not in standby_log, f"the standby acted on {name}"

    pair.active.kill()
    killed = time.monotonic()
    annotate(crds, ns, "beta", rotate_requested_at="after-kill")
    apply(crds, _key(pair, "delta", tenant))
    wait_for(
        lambda: _rotated(crds, ns, "beta", "after-kill"),
        "the standby to take over and rotate beta",
        pair.standby,
        timeout=HANDOVER_DEADLINE_S,
    )
    wait_condition(
        crds,
        "ek",
        "delta",
        "Ready",
        namespace=ns,
        operator=pair.standby,
        timeout=HANDOVER_DEADLINE_S,
    )
    print(
        f"\nhand-over: beta rotated and delta Ready {time.monotonic() - killed:.1f} s after SIGKILL"
    )
    assert RESUMED in pair.standby.log_text()

    time.sleep(SETTLE_S)  # the new leader's resume passes and drift checks run meanwhile
    expected = {
        "alpha": [(2, "ACTIVE"), (1, "ROTATED")],
        "beta": [(2, "ACTIVE"), (1, "ROTATED")],
        "gamma": [(1, "ACTIVE")],
        "delta": [(1, "ACTIVE")],
    }
    assert {name: statuses(ledger_sessions, tenant, name) for name in expected} == expected
    for name, versions in expected.items():
        assert get(crds, "ek", name, ns)["status"]["version"] == len(versions)
    # One transit key per EncryptionKey, with exactly the versions the ledger knows.
    assert sorted(_transit_versions(pair.bao).values()) == [1, 1, 2, 2]


@pytest.mark.parametrize("pair", ["finish-pending.after-kms-create"], indirect=True)
def test_standby_finishes_a_version_the_active_replica_died_making_without_a_second_kms_key(
    crds: ControlPlane, pair: Pair, ledger_sessions: sessionmaker[Session]
) -> None:
    """The active replica dies (SIGKILL, from a failpoint) between making the KMS
    key and recording it: the standby takes over and adopts that key."""
    ns, tenant = pair.namespace, pair.tenant
    apply(crds, _key(pair, "inflight", tenant))
    wait_for(
        lambda: pair.active.process is not None and pair.active.process.poll() is not None,
        "the active replica to die at its failpoint",
        pair.standby,
    )
    assert "failpoint finish-pending.after-kms-create reached" in pair.active.log_text()
    assert _transit_versions(pair.bao) and statuses(ledger_sessions, tenant, "inflight") == [
        (1, "PENDING")
    ]

    wait_condition(
        crds,
        "ek",
        "inflight",
        "Ready",
        namespace=ns,
        operator=pair.standby,
        timeout=HANDOVER_DEADLINE_S,
    )
    assert RESUMED in pair.standby.log_text()
    time.sleep(SETTLE_S)
    assert statuses(ledger_sessions, tenant, "inflight") == [(1, "ACTIVE")]
    assert list(_transit_versions(pair.bao).values()) == [1]


def _scheduled_passes(process: OperatorProcess) -> float:
    return process.metrics().get(SCHEDULED_PASSES, 0.0)


def test_a_replica_a_higher_priority_peer_pauses_runs_no_more_scheduled_passes(
    crds: ControlPlane,
    pair: Pair,
    operator_database: str,
    ledger_sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """A rolling update: a new replica of higher priority joins while the active one
    runs drift checks. kopf pauses the old one's handlers; its schedule stops too."""
    ns, tenant = pair.namespace, pair.tenant
    for name in ("alpha", "beta"):
        apply(crds, _key(pair, name, tenant))
    for name in ("alpha", "beta"):
        wait_condition(crds, "ek", name, "Ready", namespace=ns, operator=pair.active)
    wait_for(lambda: _scheduled_passes(pair.active) > 0, "a drift check", pair.active)

    newer = _replica(crds, operator_database, tmp_path / "c", ns, pair.peering, 300)
    newer.start()
    try:
        pair.active.wait_for_log(PAUSED)
        newer.wait_for_log(RESUMED)
        time.sleep(1)  # passes in flight when the pause came finish
        paused_at = _scheduled_passes(pair.active)
        wait_for(lambda: _scheduled_passes(newer) >= 2, "the new replica's drift checks", newer)
        time.sleep(SETTLE_S)  # more than two drift intervals
        assert _scheduled_passes(pair.active) == paused_at, "the paused replica kept its schedule"
        assert _scheduled_passes(newer) > 2
        # The newer replica retires beta; the paused one's schedule still holds it.
        kubectl(crds, "delete", "ek", "beta", "-n", ns, "--timeout=60s")
    finally:
        newer.stop()
        print(f"\nHA operator log: {newer.log_path}")
    # The newer replica is gone and the old one resumes: every key it held gets a pass
    # from a fresh read, so beta, deleted meanwhile, leaves its schedule instead of
    # failing a status write at every drift check.
    wait_for(
        lambda: pair.active.log_text().count(RESUMED) >= 2, "the old replica resumed", pair.active
    )
    resumed_at = _scheduled_passes(pair.active)
    wait_for(lambda: _scheduled_passes(pair.active) >= resumed_at + 3, "passes", pair.active)
    after_resume = pair.active.log_text().rpartition(RESUMED)[2]
    assert "scheduled pass failed" not in after_resume, after_resume[-3000:]
    wait_condition(crds, "ek", "alpha", "Ready", namespace=ns, operator=pair.active)
    # Nor does a pass over the body it held take beta's released history back.
    with ledger_sessions() as session:
        ledger = KeyLedger(session)
        versions = ledger.versions(tenant, "beta")
        assert versions, "beta's rows stay for audit"
        assert all(v.resource_uid is None for v in versions), "beta was claimed again"
        events = {e.event_type for v in versions for e in ledger.events(v.id)}
        assert KeyEventType.ADOPTED not in events

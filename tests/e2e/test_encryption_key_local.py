"""An EncryptionKey on the local provider, end to end as a user sees it.

The real operator (kopf, as its ServiceAccount) runs against the real control
plane and a real PostgreSQL ledger.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.store.models import KeyEventRecord
from keyledger.store.repository import KeyLedger
from tests.fixtures_operator import (
    annotate,
    apply,
    encryption_key,
    get,
    provider_manifest,
    ready_condition,
    rows,
    statuses,
    wait_condition,
    wait_for_event,
    wait_not_ready,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


def test_key_becomes_ready_with_one_active_ledger_row(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("phi-primary")
    waited = kubectl(
        crds,
        "wait",
        "--for=condition=Ready",
        "ek/phi-primary",
        "-n",
        namespace,
        "--timeout=60s",
        check=False,
    )
    assert waited.returncode == 0, f"{waited.stderr}\n{operator.log_tail()}"

    ek = get(crds, "ek", "phi-primary", namespace)
    status = ek["status"]
    assert status["phase"] == "ACTIVE"
    assert status["version"] == 1
    assert status["observedGeneration"] == ek["metadata"]["generation"]
    ready = ready_condition(ek)
    assert ready["reason"] == "KeyActive"
    assert ready["observedGeneration"] == ek["metadata"]["generation"]
    assert "keyledger.io/finalizer" in ek["metadata"]["finalizers"]

    records = rows(ledger_sessions, tenant, "phi-primary")
    assert [(r.version, r.status) for r in records] == [(1, KeyStatus.ACTIVE)]
    row = records[0]
    assert str(row.id) == status["keyId"]
    assert row.kms_key_id == status["kmsKeyRef"]
    assert row.activated_at is not None
    assert row.key_purpose == "PHI columns of the records service"
    assert row.compliance_tags == {"hipaa": "true"}
    assert row.authorized_services == ["records-api"]
    assert row.resource_uid == ek["metadata"]["uid"]

    with ledger_sessions() as session:
        events = [e.event_type for e in KeyLedger(session).events(row.id)]
    assert events == [KeyEventType.CREATED, KeyEventType.ACTIVATED]
    wait_for_event(crds, namespace, "phi-primary", "Activated")

    table = kubectl(crds, "get", "ek", "-n", namespace).stdout
    header, line = table.splitlines()[:2]
    assert header.split()[:7] == ["NAME", "TENANT", "TYPE", "PROVIDER", "PHASE", "VERSION", "READY"]
    assert line.split()[:7] == [
        "phi-primary",
        tenant,
        "PHI_DATA",
        "local-dev",
        "ACTIVE",
        "1",
        "True",
    ]


def test_delete_runs_finalizer_and_keeps_ledgerrows(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("audit", keyType="AUDIT_LOG")
    wait_condition(crds, "ek", "audit", "Ready", namespace=namespace, operator=operator)
    deleted = kubectl(crds, "delete", "ek/audit", "-n", namespace, "--timeout=60s", check=False)
    assert deleted.returncode == 0, f"{deleted.stderr}\n{operator.log_tail()}"
    gone = kubectl(crds, "get", "ek/audit", "-n", namespace, check=False)
    assert "NotFound" in gone.stderr

    records = rows(ledger_sessions, tenant, "audit")
    assert [(r.version, r.status) for r in records] == [(1, KeyStatus.ACTIVE)]
    assert records[0].resource_uid is None  # released, so a new resource may take it over
    with ledger_sessions() as session:
        retained = session.scalars(
            select(KeyEventRecord).where(
                KeyEventRecord.key_id == records[0].id,
                KeyEventRecord.event_type == KeyEventType.DELETION_RETAINED,
            )
        ).all()
    assert len(retained) == 1


def test_missing_provider_waits_then_recovers(
    crds: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    apply(
        crds,
        encryption_key(
            "orphan",
            namespace,
            tenant=tenant,
            provider="later",
            providerRef={"kind": "KeyProvider", "name": "later"},
        ),
    )
    ek = wait_not_ready(crds, "orphan", "ProviderNotFound", namespace=namespace, operator=operator)
    ready = ready_condition(ek)
    assert "KeyProvider 'later'" in ready["message"]
    assert "spec.providerRef" in ready["message"]
    assert rows(ledger_sessions, tenant, "orphan") == []  # nothing half-created

    apply(crds, provider_manifest("later", {"local": {"keystore": "later"}}, namespace=namespace))
    wait_condition(
        crds, "ek", "orphan", "Ready", namespace=namespace, operator=operator, timeout=90
    )
    assert [r.status for r in rows(ledger_sessions, tenant, "orphan")] == [KeyStatus.ACTIVE]


def test_provider_that_does_not_serve_the_tenant_is_refused(
    crds: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    name = f"only-{tenant}"
    apply(
        crds,
        provider_manifest(
            name, {"local": {"keystore": "restricted"}, "allowedTenants": ["someone"]}
        ),
    )
    wait_condition(crds, "ckp", name, "Ready", namespace=None, operator=operator)
    # Refused at admission, the earliest layer that can know.
    denied = apply(
        crds, encryption_key("denied", namespace, tenant=tenant, provider=name), check=False
    )
    assert denied.returncode != 0
    assert "ProviderNotAllowed" in denied.stderr
    assert tenant in denied.stderr and "allowedTenants" in denied.stderr
    assert rows(ledger_sessions, tenant, "denied") == []

    # The operator's backstop: the provider stops serving the tenant after the key
    # was admitted, and the key's next pass is refused with the same reason.
    kubectl(crds, "patch", "ckp", name, "--type=merge", "-p", '{"spec":{"allowedTenants":null}}')
    apply(crds, encryption_key("denied", namespace, tenant=tenant, provider=name))
    wait_condition(crds, "ek", "denied", "Ready", namespace=namespace, operator=operator)
    kubectl(
        crds, "patch", "ckp", name, "--type=merge", "-p", '{"spec":{"allowedTenants":["someone"]}}'
    )
    annotate(crds, namespace, "denied", rotate_requested_at="after-narrowing")
    ek = wait_not_ready(
        crds, "denied", "ProviderNotAllowed", namespace=namespace, operator=operator
    )
    message = ready_condition(ek)["message"]
    assert tenant in message and "allowedTenants" in message
    assert statuses(ledger_sessions, tenant, "denied") == [(1, "ACTIVE")]  # not rotated


def test_second_resource_for_the_same_key_name_is_refused(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    local_provider: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("first", keyName="shared_key")
    wait_condition(crds, "ek", "first", "Ready", namespace=namespace, operator=operator)
    apply(
        crds,
        encryption_key(
            "second", namespace, tenant=tenant, provider=local_provider, keyName="shared_key"
        ),
    )
    ek = wait_not_ready(crds, "second", "KeyNameTaken", namespace=namespace, operator=operator)
    message = ready_condition(ek)["message"]
    assert f"{namespace}/first" in message and "spec.keyName" in message
    assert len(rows(ledger_sessions, tenant, "shared_key")) == 1

    # Once the first resource is gone (Retain), the second takes the name and its
    # history over on its next retry.
    kubectl(crds, "delete", "ek", "first", "-n", namespace, "--wait=true")
    ek = wait_condition(
        crds, "ek", "second", "Ready", namespace=namespace, operator=operator, timeout=20
    )
    assert ek["status"]["version"] == 1
    (record,) = rows(ledger_sessions, tenant, "shared_key")
    assert record.resource_name == f"{namespace}/second"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"keyType": "SECRET_SAUCE"}, "spec.keyType"),
        ({"tenant": None}, "spec.tenant: Required value"),
        ({"deletionPolicy": "Shred"}, "spec.deletionPolicy"),
        ({"rotation": {"period": "ninety days"}}, "spec.rotation.period"),
        ({"rollback": {"window": "0d"}}, "spec.rollback.window: Invalid value"),
        ({"expiry": {"after": "30d", "at": "2030-01-01T00:00:00Z"}}, "expiry.after or expiry.at"),
    ],
)
def test_invalid_manifest_is_refused_naming_the_field(
    crds: ControlPlane,
    namespace: str,
    tenant: str,
    change: dict[str, Any],
    expected: str,
) -> None:
    manifest = encryption_key("bad", namespace, tenant=tenant, provider="local-dev")
    for field, value in change.items():
        if value is None:
            del manifest["spec"][field]
        else:
            manifest["spec"][field] = value
    result = apply(crds, manifest, check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "NotFound" in kubectl(crds, "get", "ek/bad", "-n", namespace, check=False).stderr


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("tenant", "someone-else", "tenant is immutable"),
        ("keyName", "renamed", "keyName is immutable"),
        ("keyType", "BACKUP", "keyType is immutable"),
        ("providerRef", {"kind": "KeyProvider", "name": "x"}, "providerRef is immutable"),
        ("adopt", {"kmsKeyId": "local:tests/late"}, "adopt is immutable"),
    ],
)
def test_identity_fields_are_immutable(
    crds: ControlPlane,
    namespace: str,
    tenant: str,
    field: str,
    value: Any,
    expected: str,
) -> None:
    manifest = encryption_key("fixed", namespace, tenant=tenant, provider="local-dev")
    apply(crds, manifest)
    manifest["spec"][field] = value
    result = apply(crds, manifest, check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert get(crds, "ek", "fixed", namespace)["spec"]["tenant"] == tenant


def test_namespace_selector_limits_a_cluster_provider(
    crds: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    name = f"labelled-{tenant}"
    apply(
        crds,
        provider_manifest(
            name,
            {
                "local": {"keystore": "labelled"},
                "namespaceSelector": {"matchLabels": {f"keyledger.io/{tenant}": "allowed"}},
            },
        ),
    )
    wait_condition(crds, "ckp", name, "Ready", namespace=None, operator=operator)
    gated = encryption_key("gated", namespace, tenant=tenant, provider=name)
    denied = apply(crds, gated, check=False)
    assert denied.returncode != 0
    assert "ProviderNotAllowed" in denied.stderr and "spec.namespaceSelector" in denied.stderr
    assert rows(ledger_sessions, tenant, "gated") == []

    # Admitted while the provider served every namespace; the selector comes back
    # afterwards: the operator refuses the key's next pass with the same reason.
    selector = {"matchLabels": {f"keyledger.io/{tenant}": "allowed"}}
    patch_selector = '{"spec":{"namespaceSelector":%s}}'
    kubectl(crds, "patch", "ckp", name, "--type=merge", "-p", patch_selector % "null")
    apply(crds, gated)
    wait_condition(crds, "ek", "gated", "Ready", namespace=namespace, operator=operator)
    kubectl(crds, "patch", "ckp", name, "--type=merge", "-p", patch_selector % json.dumps(selector))
    annotate(crds, namespace, "gated", rotate_requested_at="after-the-selector")
    ek = wait_not_ready(crds, "gated", "ProviderNotAllowed", namespace=namespace, operator=operator)
    assert "spec.namespaceSelector" in ready_condition(ek)["message"]
    assert statuses(ledger_sessions, tenant, "gated") == [(1, "ACTIVE")]
    # Labelling the namespace is enough: the key retries and goes Ready by itself.
    kubectl(crds, "label", "namespace", namespace, f"keyledger.io/{tenant}=allowed")
    wait_condition(crds, "ek", "gated", "Ready", namespace=namespace, operator=operator, timeout=90)

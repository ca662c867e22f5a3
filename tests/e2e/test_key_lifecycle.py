"""Every lifecycle transition end to end, as a user sees it: status, conditions,
events and ledger rows, with the real operator, control plane and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyEventType, KeyStatus
from keyledger.providers.base import KmsKeyState
from keyledger.providers.local.backend import LocalBackend
from tests.fixtures_operator import (
    annotate,
    apply,
    audit,
    condition,
    encryption_key,
    get,
    ready_condition,
    rows,
    statuses,
    wait_condition,
    wait_for,
    wait_for_event,
    wait_not_ready,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


def keystore(operator: OperatorProcess) -> LocalBackend:
    return LocalBackend(operator.keystore_dir / "tests.json")


def test_scheduled_rotation_fires(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    # The window is shorter than the period, as admission requires.
    make_key("sched", rotation={"period": "8s"}, rollback={"window": "6s"})
    ek = wait_condition(crds, "ek", "sched", "Ready", namespace=namespace, operator=operator)
    assert ek["status"]["nextRotationAt"]
    # `kubectl get ek` shows when the next rotation happens, as a timestamp.
    row = kubectl(crds, "get", "ek/sched", "-n", namespace).stdout.split("\n")[1].split()
    assert row[7] == ek["status"]["nextRotationAt"]
    wait_for(
        lambda: statuses(ledger_sessions, tenant, "sched")[:2] == [(2, "ACTIVE"), (1, "ROTATED")],
        "scheduled rotation",
        operator,
        timeout=30,
    )
    v2, v1 = rows(ledger_sessions, tenant, "sched")[:2]
    assert v2.parent_key_id == v1.id
    assert v1.rotated_at is not None and v1.can_rollback
    assert v1.rollback_expires_at is not None and v1.rotated_by == "keyledger-operator"
    created = next(e for e in audit(ledger_sessions, v2) if e.event_type is KeyEventType.CREATED)
    assert created.details == {"trigger": "schedule", "rotation_period": "8s"}
    ek = wait_condition(
        crds, "ek", "sched", "RollbackAvailable", namespace=namespace, operator=operator
    )
    assert ek["status"]["previousVersion"]["version"] >= 1
    wait_for_event(crds, namespace, "sched", "Rotated")


def test_rotation_on_request_happens_once_per_token(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("ondemand")
    wait_condition(crds, "ek", "ondemand", "Ready", namespace=namespace, operator=operator)
    annotate(crds, namespace, "ondemand", rotate_requested_at="ticket-1")
    wait_for(
        lambda: statuses(ledger_sessions, tenant, "ondemand") == [(2, "ACTIVE"), (1, "ROTATED")],
        "rotation",
        operator,
    )
    # The same token again (re-applied YAML), plus an unrelated change: no second rotation.
    annotate(crds, namespace, "ondemand", rotate_requested_at="ticket-1")
    kubectl(
        crds,
        "patch",
        "-n",
        namespace,
        "ek/ondemand",
        "--type=merge",
        "-p",
        '{"spec": {"purpose": "changed"}}',
    )
    wait_for(
        lambda: (
            get(crds, "ek", "ondemand", namespace)["status"]
            .get("lastHandledRequests", {})
            .get("rotate")
            == "ticket-1"
        ),
        "handled token",
        operator,
    )
    time.sleep(3)
    assert statuses(ledger_sessions, tenant, "ondemand") == [(2, "ACTIVE"), (1, "ROTATED")]
    annotate(crds, namespace, "ondemand", rotate_requested_at="ticket-2")
    wait_for(
        lambda: statuses(ledger_sessions, tenant, "ondemand")[0] == (3, "ACTIVE"),
        "second rotation",
        operator,
    )


def test_rollback_inside_the_window(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("rb", rollback={"window": "1h"})
    wait_condition(crds, "ek", "rb", "Ready", namespace=namespace, operator=operator)
    annotate(crds, namespace, "rb", rotate_requested_at="r1")
    wait_condition(crds, "ek", "rb", "RollbackAvailable", namespace=namespace, operator=operator)
    v1_ref = rows(ledger_sessions, tenant, "rb")[1].kms_key_id
    annotate(crds, namespace, "rb", rollback_requested_at="b1")
    wait_for(
        lambda: statuses(ledger_sessions, tenant, "rb") == [(2, "INACTIVE"), (1, "ACTIVE")],
        "rollback",
        operator,
    )
    ek = wait_condition(
        crds,
        "ek",
        "rb",
        "RollbackAvailable",
        namespace=namespace,
        operator=operator,
        status="False",
    )
    assert ek["status"]["version"] == 1 and ek["status"]["kmsKeyRef"] == v1_ref
    assert ready_condition(ek)["status"] == "True"
    wait_for_event(crds, namespace, "rb", "RolledBack")


def test_rollback_outside_the_window_is_refused(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("late", rollback={"window": "3s"})
    wait_condition(crds, "ek", "late", "Ready", namespace=namespace, operator=operator)
    annotate(crds, namespace, "late", rotate_requested_at="r1")
    wait_condition(crds, "ek", "late", "RollbackAvailable", namespace=namespace, operator=operator)
    # The schedule closes the window by itself: condition, ledger flag, audit row.
    wait_condition(
        crds,
        "ek",
        "late",
        "RollbackAvailable",
        namespace=namespace,
        operator=operator,
        status="False",
        reason="RollbackWindowClosed",
        timeout=20,
    )
    v1 = rows(ledger_sessions, tenant, "late")[1]
    assert not v1.can_rollback
    assert KeyEventType.ROLLBACK_WINDOW_CLOSED in [e.event_type for e in audit(ledger_sessions, v1)]
    # The request is refused up front, with the reason the status already showed
    # (the operator's own refusal of such a request, for a write that bypassed the
    # webhook, is tested with the executor).
    refused = kubectl(
        crds,
        "annotate",
        "-n",
        namespace,
        "ek/late",
        "keyledger.io/rollback-requested-at=too-late",
        check=False,
    )
    assert refused.returncode != 0
    assert "RollbackWindowClosed: keyledger.io/rollback-requested-at: nothing to roll back" in (
        refused.stderr
    )
    event = wait_for_event(crds, namespace, "late", "RollbackWindowClosed")
    assert event["type"] == "Normal"  # the window closing, told as it happened
    assert statuses(ledger_sessions, tenant, "late") == [(2, "ACTIVE"), (1, "ROTATED")]


def _events(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    from tests.fixtures_operator import events_for  # noqa: PLC0415

    return events_for(cp, namespace, name)


def test_expiry(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("brief", expiry={"after": "8s", "warnBefore": "6s"})
    wait_condition(crds, "ek", "brief", "Ready", namespace=namespace, operator=operator)
    ek = wait_condition(
        crds,
        "ek",
        "brief",
        "Expiring",
        namespace=namespace,
        operator=operator,
        reason="ExpiresSoon",
        timeout=20,
    )
    assert ek["status"]["expiresAt"]
    ek = wait_condition(
        crds,
        "ek",
        "brief",
        "Ready",
        namespace=namespace,
        operator=operator,
        status="False",
        reason="KeyExpired",
        timeout=30,
    )
    assert ek["status"]["phase"] == "EXPIRED"
    assert "rotate-requested-at" in ready_condition(ek)["message"]
    assert statuses(ledger_sessions, tenant, "brief") == [(1, "EXPIRED")]
    wait_for_event(crds, namespace, "brief", "KeyExpired")


def test_rotation_before_expiry(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    # Expiry after 20 s, a tenth of it (2 s) the lead: the version is replaced at 18 s,
    # before the 19 s period would have, and before it expires.
    make_key("renewed", rotation={"period": "19s"}, expiry={"after": "20s"})
    wait_condition(crds, "ek", "renewed", "Ready", namespace=namespace, operator=operator)
    wait_for(
        lambda: statuses(ledger_sessions, tenant, "renewed")[:1] == [(2, "ACTIVE")],
        "rotation before expiry",
        operator,
        timeout=45,
    )
    v2 = rows(ledger_sessions, tenant, "renewed")[0]
    created = next(e for e in audit(ledger_sessions, v2) if e.event_type is KeyEventType.CREATED)
    assert created.details == {"trigger": "before-expiry", "rotation_period": "19s"}


def test_compromise(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("leaked", rollback={"window": "1h"})
    wait_condition(crds, "ek", "leaked", "Ready", namespace=namespace, operator=operator)
    v1_ref = rows(ledger_sessions, tenant, "leaked")[0].kms_key_id
    assert v1_ref is not None
    annotate(
        crds,
        namespace,
        "leaked",
        compromised_requested_at="inc-42",
        compromise_reason="key-in-a-public-gist",
    )
    wait_for(
        lambda: statuses(ledger_sessions, tenant, "leaked") == [(2, "ACTIVE"), (1, "COMPROMISED")],
        "compromise",
        operator,
    )
    assert keystore(operator).describe(v1_ref).state is KmsKeyState.DISABLED
    v1 = rows(ledger_sessions, tenant, "leaked")[1]
    compromised = next(
        e for e in audit(ledger_sessions, v1) if e.event_type is KeyEventType.COMPROMISED
    )
    assert compromised.details == {
        "request": "compromise",
        "token": "inc-42",
        "reason": "key-in-a-public-gist",
        # The test's administrator, as the admission webhook recorded the request.
        "requester": {
            "username": "keyledger-admin",
            "uid": "",
            "groups": ["system:masters", "system:authenticated"],
        },
    }
    assert compromised.actor == "keyledger-admin"
    event = wait_for_event(crds, namespace, "leaked", "KeyCompromised")
    assert event["type"] == "Warning"
    wait_condition(crds, "ek", "leaked", "Ready", namespace=namespace, operator=operator)
    undo = kubectl(
        crds,
        "annotate",
        "-n",
        namespace,
        "ek/leaked",
        "keyledger.io/rollback-requested-at=undo",
        check=False,
    )
    assert undo.returncode != 0
    assert "PreviousVersionCompromised" in undo.stderr
    assert statuses(ledger_sessions, tenant, "leaked") == [(2, "ACTIVE"), (1, "COMPROMISED")]


def test_disable_and_enable(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("toggle")
    wait_condition(crds, "ek", "toggle", "Ready", namespace=namespace, operator=operator)
    kubectl(
        crds,
        "patch",
        "-n",
        namespace,
        "ek/toggle",
        "--type=merge",
        "-p",
        '{"spec": {"state": "Inactive"}}',
    )
    ek = wait_not_ready(crds, "toggle", "KeyInactive", namespace=namespace, operator=operator)
    assert ek["status"]["phase"] == "INACTIVE"
    assert statuses(ledger_sessions, tenant, "toggle") == [(1, "INACTIVE")]
    kubectl(
        crds,
        "patch",
        "-n",
        namespace,
        "ek/toggle",
        "--type=merge",
        "-p",
        '{"spec": {"state": "Active"}}',
    )
    wait_condition(crds, "ek", "toggle", "Ready", namespace=namespace, operator=operator)
    assert statuses(ledger_sessions, tenant, "toggle") == [(1, "ACTIVE")]
    events = [
        e.event_type for e in audit(ledger_sessions, rows(ledger_sessions, tenant, "toggle")[0])
    ]
    assert events[-2:] == [KeyEventType.DISABLED, KeyEventType.ENABLED]


@pytest.mark.parametrize(
    ("policy", "kms_state", "audit_event"),
    [
        ("Retain", KmsKeyState.ENABLED, KeyEventType.DELETION_RETAINED),
        ("Disable", KmsKeyState.DISABLED, KeyEventType.DELETION_DISABLED),
        ("ScheduleDeletion", KmsKeyState.PENDING_DELETION, KeyEventType.DELETION_SCHEDULED),
    ],
)
def test_deletion_policies(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
    policy: str,
    kms_state: KmsKeyState,
    audit_event: KeyEventType,
) -> None:
    make_key("doomed", deletionPolicy=policy, deletionWindowDays=7)
    wait_condition(crds, "ek", "doomed", "Ready", namespace=namespace, operator=operator)
    annotate(crds, namespace, "doomed", rotate_requested_at="r1")
    wait_for(lambda: len(rows(ledger_sessions, tenant, "doomed")) == 2, "rotation", operator)
    kubectl(crds, "delete", "-n", namespace, "ek/doomed", "--timeout=60s")
    versions = rows(ledger_sessions, tenant, "doomed")
    assert [(r.version, r.status) for r in versions] == [
        (2, KeyStatus.ACTIVE),
        (1, KeyStatus.ROTATED),
    ]
    for record in versions:
        assert record.kms_key_id is not None
        described = keystore(operator).describe(record.kms_key_id)
        assert described.state is kms_state
        assert audit_event in [e.event_type for e in audit(ledger_sessions, record)]
        if kms_state is KmsKeyState.PENDING_DELETION:
            assert described.deletion_date is not None


def test_drift_is_detected_and_resolved(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("drifty")
    wait_condition(crds, "ek", "drifty", "Ready", namespace=namespace, operator=operator)
    record = rows(ledger_sessions, tenant, "drifty")[0]
    assert record.kms_key_id is not None
    keystore(operator).disable(record.kms_key_id)  # someone, outside keyledger
    ek = wait_condition(
        crds, "ek", "drifty", "Drifted", namespace=namespace, operator=operator, timeout=20
    )
    ready = condition(ek, "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "Drifted"
    assert wait_for_event(crds, namespace, "drifty", "DriftDetected")["type"] == "Warning"
    assert KeyEventType.DRIFT_DETECTED in [e.event_type for e in audit(ledger_sessions, record)]
    # A spec change in between must not paper over the drift.
    kubectl(
        crds,
        "patch",
        "-n",
        namespace,
        "ek/drifty",
        "--type=merge",
        "-p",
        '{"spec": {"purpose": "still drifted"}}',
    )
    time.sleep(1)
    assert ready_condition(get(crds, "ek", "drifty", namespace))["status"] == "False"
    keystore(operator).enable(record.kms_key_id)
    wait_condition(
        crds,
        "ek",
        "drifty",
        "Drifted",
        namespace=namespace,
        operator=operator,
        status="False",
        timeout=20,
    )
    wait_condition(crds, "ek", "drifty", "Ready", namespace=namespace, operator=operator)


def kubectl_keyledger(
    cp: ControlPlane, namespace: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`kubectl keyledger ...` as a user runs it, with the admin kubeconfig."""
    return subprocess.run(
        [sys.executable, "-m", "keyledger.cli.main", *args, "-n", namespace],
        env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_kubectl_plugin_rotates_and_rolls_back(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("plugged", rollback={"window": "1h"})
    wait_condition(crds, "ek", "plugged", "Ready", namespace=namespace, operator=operator)

    def plugin(*args: str) -> subprocess.CompletedProcess[str]:
        return kubectl_keyledger(crds, namespace, *args)

    rotated = plugin("rotate", "plugged")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert "done: version 2 is ACTIVE" in rotated.stdout
    rolled = plugin("rollback", "plugged")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert statuses(ledger_sessions, tenant, "plugged") == [(2, "INACTIVE"), (1, "ACTIVE")]
    again = plugin("rollback", "plugged")  # nothing left to roll back to: refused up front
    assert again.returncode == 1
    assert "NoPreviousVersion: keyledger.io/rollback-requested-at: nothing to roll back" in (
        again.stdout
    )
    assert statuses(ledger_sessions, tenant, "plugged") == [(2, "INACTIVE"), (1, "ACTIVE")]


def test_a_paused_key_changes_nothing_until_resumed_then_catches_up(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Any,
    namespace: str,
    tenant: str,
    local_provider: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    make_key("frozen", rotation={"period": "1h"})
    wait_condition(crds, "ek", "frozen", "Ready", namespace=namespace, operator=operator)
    paused = kubectl_keyledger(crds, namespace, "pause", "frozen")
    assert paused.returncode == 0 and "makes no changes" in paused.stdout, paused.stdout
    ek = get(crds, "ek", "frozen", namespace)
    assert ready_condition(ek)["status"] == "True"  # the key itself stays usable
    annotate(crds, namespace, "frozen", rotate_requested_at="during-the-freeze")

    # Created paused: nothing is made, not even the first version.
    manifest = encryption_key("later", namespace, tenant=tenant, provider=local_provider)
    manifest["metadata"]["annotations"] = {"keyledger.io/paused": "true"}
    apply(crds, manifest)
    wait_not_ready(crds, "later", "Paused", namespace=namespace, operator=operator)
    time.sleep(4)  # several drift checks and handler passes
    assert statuses(ledger_sessions, tenant, "frozen") == [(1, "ACTIVE")]
    assert statuses(ledger_sessions, tenant, "later") == []

    kubectl(crds, "annotate", "-n", namespace, "ek/later", "keyledger.io/paused-")
    resumed = kubectl_keyledger(crds, namespace, "resume", "frozen")
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stdout
    # The request made during the freeze is carried out now, once.
    wait_for(
        lambda: statuses(ledger_sessions, tenant, "frozen") == [(2, "ACTIVE"), (1, "ROTATED")],
        "the request made while paused",
        operator,
    )
    wait_condition(crds, "ek", "later", "Ready", namespace=namespace, operator=operator)
    assert statuses(ledger_sessions, tenant, "later") == [(1, "ACTIVE")]

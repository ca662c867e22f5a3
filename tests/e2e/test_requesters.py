"""Who did what: the users who created, rotated and compromised a key are the
actors of its audit rows and its created_by / rotated_by, as the admission
webhook recorded them; what time does is the operator's."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyEventType
from tests.fixtures_operator import (
    apply,
    audit,
    encryption_key,
    rows,
    statuses,
    wait_condition,
    wait_for,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

USERS = ("alice", "bob", "carol")


def as_user(cp: ControlPlane, user: str, *args: str, input: str | None = None) -> None:
    kubectl(cp, f"--as={user}", "--as-group=key-editors", *args, input=input)


@pytest.fixture
def editors(crds: ControlPlane, namespace: str) -> None:
    """alice, bob and carol may edit keys in the namespace (keyledger-key-editor)."""
    binding: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "key-editors", "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "keyledger-key-editor",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
            for user in USERS
        ],
    }
    apply(crds, binding)


def test_each_users_act_is_audited_under_their_name(
    crds: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    tenant: str,
    local_provider: str,
    editors: None,
    ledger_sessions: sessionmaker[Session],
) -> None:
    manifest = encryption_key("phi", namespace, tenant=tenant, provider=local_provider)
    as_user(crds, "alice", "apply", "-f", "-", input=yaml.safe_dump(manifest))
    wait_condition(crds, "ek", "phi", "Ready", namespace=namespace, operator=operator)
    as_user(
        crds, "bob", "annotate", "-n", namespace, "ek/phi", "keyledger.io/rotate-requested-at=r1"
    )
    wait_for(
        lambda: statuses(ledger_sessions, tenant, "phi") == [(2, "ACTIVE"), (1, "ROTATED")],
        "the rotation bob asked for",
        operator,
    )
    as_user(
        crds,
        "carol",
        "annotate",
        "-n",
        namespace,
        "ek/phi",
        "keyledger.io/compromised-requested-at=c1",
        "keyledger.io/compromise-reason=found in a ticket attachment",
    )
    wait_for(
        lambda: statuses(ledger_sessions, tenant, "phi")[:2] == [(3, "ACTIVE"), (2, "COMPROMISED")],
        "the compromise carol reported",
        operator,
    )

    v3, v2, v1 = rows(ledger_sessions, tenant, "phi")
    assert (v1.created_by, v1.rotated_by) == ("alice", "bob")
    assert v2.created_by == "bob"
    assert v3.created_by == "keyledger-operator"  # the replacement is the operator's doing

    def actors(version: Any) -> dict[KeyEventType, tuple[str, Any]]:
        return {
            event.event_type: (event.actor, (event.details or {}).get("requester"))
            for event in audit(ledger_sessions, version)
        }

    first, second = actors(v1), actors(v2)
    assert first[KeyEventType.CREATED][0] == "alice"
    assert first[KeyEventType.ACTIVATED][0] == "alice"
    assert first[KeyEventType.ROTATED][0] == "bob"
    assert second[KeyEventType.CREATED][0] == "bob"
    actor, requester = second[KeyEventType.COMPROMISED]
    assert actor == "carol"
    assert requester["username"] == "carol"
    assert "key-editors" in requester["groups"]
    assert actors(v3)[KeyEventType.CREATED][0] == "keyledger-operator"

"""A service encrypts PHI with the key the operator manages, across a rotation
applied with kubectl, reading the same PostgreSQL ledger the operator writes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.client import KeyledgerClient
from keyledger.client.envelope import parse
from keyledger.lifecycle.conditions import rfc3339
from keyledger.providers.local.backend import LocalBackend
from tests.fixtures_operator import annotate, get, rows, wait_condition, wait_for
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

PHI = b"MRN 0042: allergic to penicillin"
CONTEXT = {"table": "allergies", "row": "42"}


def test_service_encrypts_across_a_rotation_and_reads_old_data(
    crds: ControlPlane,
    operator: OperatorProcess,
    operator_database: str,
    ledger_sessions: sessionmaker[Session],
    make_key: Callable[..., dict[str, Any]],
    namespace: str,
    tenant: str,
) -> None:
    make_key("records")
    wait_condition(crds, "ek", "records", "Ready", namespace=namespace, operator=operator)
    # The service's own view of the (dev-only) keystore the operator's local provider uses.
    backend = LocalBackend(operator.keystore_dir / "tests.json")

    with KeyledgerClient(operator_database, [backend], version_check_s=0) as client:
        before = client.encrypt(tenant, "records", PHI, CONTEXT)
        annotate(crds, namespace, "records", rotate_requested_at="ticket-7")
        status = wait_for(
            lambda: (
                (s := get(crds, "ek", "records", namespace).get("status", {}))
                and s.get("version") == 2
                and s
            ),
            "version 2",
            operator,
        )
        after = client.encrypt(tenant, "records", PHI, CONTEXT)

        assert parse(before).key_id != parse(after).key_id == uuid.UUID(status["keyId"])
        assert client.decrypt(before, CONTEXT, tenant=tenant) == PHI
        assert client.decrypt(after, CONTEXT, tenant=tenant) == PHI

    used = {r.version: r.last_used_at for r in rows(ledger_sessions, tenant, "records")}
    assert used[1] is not None and used[2] is not None
    first_used, current_used = rfc3339(used[1]), rfc3339(used[2])
    # The next drift check (every 3 s here) shows the current version's last use.
    wait_for(
        lambda: get(crds, "ek", "records", namespace)["status"].get("lastUsedAt") == current_used,
        "status.lastUsedAt",
        operator,
    )
    # ...and, in status.versions, when the rotated version last decrypted something.
    wait_for(
        lambda: (
            {
                entry["version"]: entry.get("lastUsedAt")
                for entry in get(crds, "ek", "records", namespace)["status"]["versions"]
            }
            == {1: first_used, 2: current_used}
        ),
        "status.versions[].lastUsedAt",
        operator,
    )
    wide = kubectl(crds, "get", "ek", "records", "-n", namespace, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    assert "EXPIRES" in header and "LAST USED" in header
    assert rfc3339(used[2]) in row.split()

"""A service encrypts PHI with the key the operator manages, across a rotation
applied with kubectl, reading the same PostgreSQL ledger the operator writes;
a compromise reaches a running client through the ledger's notifications."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.client import KeyledgerClient
from keyledger.client.envelope import parse
from keyledger.domain import KeyStatus
from keyledger.errors import KeyNotUsable
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


def test_a_compromise_reaches_a_running_client_at_once(
    crds: ControlPlane,
    operator: OperatorProcess,
    operator_database: str,
    ledger_sessions: sessionmaker[Session],
    make_key: Callable[..., dict[str, Any]],
    namespace: str,
    tenant: str,
) -> None:
    make_key("notified")
    wait_condition(crds, "ek", "notified", "Ready", namespace=namespace, operator=operator)
    backend = LocalBackend(operator.keystore_dir / "tests.json")
    hour = 3600.0  # no polling re-read during the test: only a notification can help

    with (
        KeyledgerClient(operator_database, [backend], version_check_s=hour) as told,
        KeyledgerClient(operator_database, [backend], version_check_s=hour, listen=False) as deaf,
    ):
        assert told.listening(timeout=30)
        leaked = parse(told.encrypt(tenant, "notified", PHI, CONTEXT)).key_id
        assert parse(deaf.encrypt(tenant, "notified", PHI, CONTEXT)).key_id == leaked

        compromise = subprocess.run(
            [
                *(sys.executable, "-m", "keyledger.cli.main", "compromise", "notified"),
                *("-n", namespace, "--reason", "key in a public gist", "--wait", "0"),
            ],
            env={**os.environ, "KUBECONFIG": str(crds.kubeconfig)},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert compromise.returncode == 0, compromise.stdout + compromise.stderr

        def replaced() -> uuid.UUID | None:
            by_status = {r.status: r.id for r in rows(ledger_sessions, tenant, "notified")}
            if by_status.get(KeyStatus.COMPROMISED) != leaked:
                return None
            return by_status.get(KeyStatus.ACTIVE)

        # Watched closely (not with wait_for's 0.3 s steps): the second starts when it lands.
        current = None
        watch_until = time.monotonic() + 60
        while current is None:
            assert time.monotonic() < watch_until, operator.log_tail()
            current = replaced()
            time.sleep(0.005)
        # From the moment the ledger holds the new version, the running client seals
        # under it within a second, though it would not re-read the ledger for an hour.
        deadline = time.monotonic() + 1.0
        while True:
            try:
                sealed_under = parse(told.encrypt(tenant, "notified", PHI, CONTEXT)).key_id
            except KeyNotUsable:  # between the compromise and its replacement
                sealed_under = None
            if sealed_under == current:
                break
            assert time.monotonic() < deadline, f"still sealing under {sealed_under}"
            time.sleep(0.01)
        # Without the notification nothing would have moved: the client that does not
        # listen keeps its cached (now compromised) version until its hourly re-read.
        assert parse(deaf.encrypt(tenant, "notified", PHI, CONTEXT)).key_id == leaked

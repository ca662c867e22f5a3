"""Kill the operator in the middle of a rotation; after restart there is exactly one
ACTIVE version and no second KMS key was ever made."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.providers.local.keystore import read_keystore
from keyledger.store.repository import KeyLedger
from tests.fixtures_operator import (
    apply,
    bind_namespace,
    condition,
    encryption_key,
    get,
    new_operator,
    wait_condition,
    wait_for,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


@pytest.fixture
def crash_namespace(crds: ControlPlane) -> Iterator[str]:
    name = f"crash-{uuid.uuid4().hex[:8]}"
    kubectl(crds, "create", "namespace", name)
    yield name


def _keystore_entries(state: Path) -> dict[str, dict[str, Any]]:
    return read_keystore(state / "data" / "local-keystores" / "tests.json")


def _ready_at(ek: dict[str, Any], version: int) -> dict[str, Any] | None:
    ready = condition(ek, "Ready")
    shown = (ek.get("status") or {}).get("version")
    return ek if ready and ready["status"] == "True" and shown == version else None


def _wait_dead(process: OperatorProcess, timeout: float = 60) -> None:
    assert process.process is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            return
        time.sleep(0.2)
    raise AssertionError(f"failpoint never fired\n{process.log_tail()}")


@pytest.mark.parametrize(
    ("failpoint", "rows_at_crash", "kms_keys_at_crash"),
    [
        # After the KMS step, before the ledger step.
        ("finish-pending.after-kms-create", [(2, "PENDING"), (1, "ACTIVE")], 2),
        ("finish-pending.after-make-primary", [(2, "PENDING"), (1, "ACTIVE")], 2),
        # The reverse: after the ledger step, before the KMS step.
        ("CreateVersion.after-ledger", [(2, "PENDING"), (1, "ACTIVE")], 1),
    ],
)
def test_operator_killed_mid_rotation_finishes_it_once(
    crds: ControlPlane,
    operator_database: str,
    local_provider: str,
    crash_namespace: str,
    ledger_sessions: sessionmaker[Session],
    tmp_path: Path,
    failpoint: str,
    rows_at_crash: list[tuple[int, str]],
    kms_keys_at_crash: int,
) -> None:
    tenant = f"crash-{uuid.uuid4().hex[:6]}"
    bind_namespace(crds, crash_namespace, tenant)
    state = tmp_path / "operator"

    def start(**env: str) -> OperatorProcess:
        process = new_operator(crds, operator_database, state, (crash_namespace,), **env)
        process.start()
        return process

    def ledger() -> list[tuple[int, str]]:
        with ledger_sessions() as session:
            return [
                (r.version, r.status.value) for r in KeyLedger(session).versions(tenant, "crashy")
            ]

    first = start()
    try:
        apply(
            crds, encryption_key("crashy", crash_namespace, tenant=tenant, provider=local_provider)
        )
        wait_condition(crds, "ek", "crashy", "Ready", namespace=crash_namespace, operator=first)
    finally:
        first.stop()

    doomed = start(KEYLEDGER_FAILPOINTS=failpoint)
    try:
        kubectl(
            crds,
            "annotate",
            "-n",
            crash_namespace,
            "ek/crashy",
            "keyledger.io/rotate-requested-at=crash-1",
        )
        _wait_dead(doomed)
    finally:
        doomed.kill()
    assert f"failpoint {failpoint} reached" in doomed.log_text()
    assert ledger() == rows_at_crash
    assert len(_keystore_entries(state)) == kms_keys_at_crash

    survivor = start()
    try:
        deadline = time.monotonic() + 60
        while ledger() != [(2, "ACTIVE"), (1, "ROTATED")] and time.monotonic() < deadline:
            survivor.assert_running()
            time.sleep(0.3)
        assert ledger() == [(2, "ACTIVE"), (1, "ROTATED")], survivor.log_tail()
        # The ledger commits before the status is written, and the status still says
        # Ready from before the crash: wait for the survivor's status, at version 2.
        ek = wait_for(
            lambda: _ready_at(get(crds, "ek", "crashy", crash_namespace), 2),
            "the survivor's status: Ready at version 2",
            survivor,
        )
        entries = _keystore_entries(state)
        assert len(entries) == 2, "a second KMS key was created for the same version"
        with ledger_sessions() as session:
            refs = {r.kms_key_id for r in KeyLedger(session).versions(tenant, "crashy")}
        assert {ref.rsplit("/", 1)[1] for ref in refs if ref} == set(entries)
        assert ek["status"]["lastHandledRequests"] == {"rotate": "crash-1"}
    finally:
        survivor.stop()

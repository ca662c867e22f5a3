"""spec.adopt through the operator: a key made outside keyledger becomes version 1."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.providers.base import KeyVersionRequest
from keyledger.providers.local.backend import LocalBackend
from tests.fixtures_operator import (
    audit,
    ready_condition,
    rows,
    wait_condition,
    wait_for_event,
    wait_not_ready,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


def test_an_existing_key_is_adopted_and_a_missing_one_refused(
    crds: ControlPlane,
    operator: OperatorProcess,
    ledger_sessions: sessionmaker[Session],
    make_key: Callable[..., dict[str, Any]],
    namespace: str,
    tenant: str,
) -> None:
    # Made by hand in the provider's keystore, before keyledger knew of it.
    keystore = LocalBackend(operator.keystore_dir / "tests.json")
    existing = keystore.create_key_version(
        KeyVersionRequest("legacy", "by-hand", 1, "AES-256-GCM", f"manual-{uuid.uuid4()}")
    ).ref

    make_key("inherited", adopt={"kmsKeyId": existing})
    ek = wait_condition(crds, "ek", "inherited", "Ready", namespace=namespace, operator=operator)
    assert (ek["status"]["version"], ek["status"]["kmsKeyRef"]) == (1, existing)
    assert "existing KMS key" in wait_for_event(crds, namespace, "inherited", "Adopted")["message"]
    (record,) = rows(ledger_sessions, tenant, "inherited")
    assert "ADOPTED" in [e.event_type.value for e in audit(ledger_sessions, record)]

    make_key("imagined", adopt={"kmsKeyId": "local:tests/00000000-no-such-key"})
    refused = wait_not_ready(
        crds, "imagined", "AdoptionRefused", namespace=namespace, operator=operator
    )
    message = ready_condition(refused)["message"]
    assert message.startswith("spec.adopt.kmsKeyId:")
    assert rows(ledger_sessions, tenant, "imagined") == []  # refused before any ledger row

"""spec.adopt.kmsKeyId on every backend: an existing KMS key becomes version 1,
rotations then make keys of their own; what cannot be adopted is refused by name."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.api import ROTATE_REQUESTED_AT
from keyledger.client import KeyledgerClient
from keyledger.domain import KeyEventType
from keyledger.errors import InvalidSpec
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.base import KeyVersionRequest
from keyledger.store.repository import KeyLedger
from tests.contract.target import ContractTarget


def _existing_key(target: ContractTarget, name: str) -> str:
    """A key made before keyledger managed it: its own name, no keyledger marker."""
    return target.backend.create_key_version(
        KeyVersionRequest(
            tenant="legacy",
            key_name=name,
            version=1,
            algorithm="AES-256-GCM",
            marker=f"made-by-hand-{uuid.uuid4()}",
        )
    ).ref


def _key(name: str, adopt: str, **annotations: str) -> KeyResource:
    spec = KeySpec.from_resource(
        name,
        {
            "tenant": "contract",
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "contract"},
            "adopt": {"kmsKeyId": adopt},
        },
    )
    return KeyResource(f"uid-{name}", "contract", name, 1, spec, annotations)


def test_an_existing_key_becomes_version_one(
    target: ContractTarget, ledger: sessionmaker[Session]
) -> None:
    name = f"k{uuid.uuid4().hex[:10]}"
    existing = _existing_key(target, f"legacy-{name}")
    operations = KeyOperations(ledger, actor="contract")
    client = KeyledgerClient(ledger, [target.backend], version_check_s=0)
    if target.backend.adoption_refusal is not None:
        # A backend that cannot adopt says so, by field, and makes nothing.
        with pytest.raises(InvalidSpec, match=r"^spec\.adopt: the .* backend cannot adopt"):
            operations.reconcile(_key(name, existing), target.backend, "contract")
        with ledger() as session:
            assert KeyLedger(session).active("contract", name) is None
        return

    operations.reconcile(_key(name, existing), target.backend, "contract")
    with ledger() as session:
        v1 = KeyLedger(session).active("contract", name)
        assert v1 is not None and (v1.version, v1.kms_key_id) == (1, existing)
        events = [e.event_type for e in KeyLedger(session).events(v1.id)]
    assert KeyEventType.ADOPTED in events and KeyEventType.ACTIVATED not in events
    before = client.encrypt("contract", name, b"phi", {})

    operations.reconcile(
        _key(name, existing, **{ROTATE_REQUESTED_AT: "after-adoption"}), target.backend, "contract"
    )
    with ledger() as session:
        versions = {r.version: r for r in KeyLedger(session).versions("contract", name)}
    assert versions[1].status.value == "ROTATED"
    assert versions[2].status.value == "ACTIVE" and versions[2].kms_key_id != existing
    assert client.decrypt(before, {}, tenant="contract") == b"phi"


def test_what_cannot_be_adopted_is_refused_by_field(
    target: ContractTarget, ledger: sessionmaker[Session]
) -> None:
    operations = KeyOperations(ledger, actor="contract")
    owned = _existing_key(target, f"legacy-{uuid.uuid4().hex[:8]}")
    if target.backend.adoption_refusal is not None:
        # Refused before any ledger or KMS check, whatever the key.
        with pytest.raises(InvalidSpec, match="cannot adopt an existing key"):
            operations.reconcile(_key("never", owned), target.backend, "contract")
        return
    first = f"k{uuid.uuid4().hex[:10]}"
    operations.reconcile(_key(first, owned), target.backend, "contract")

    second = f"k{uuid.uuid4().hex[:10]}"
    with pytest.raises(
        InvalidSpec, match=rf"spec\.adopt\.kmsKeyId: .* is already version 1 of contract/{first}"
    ):
        operations.reconcile(_key(second, owned), target.backend, "contract")

    disabled = _existing_key(target, f"legacy-{uuid.uuid4().hex[:8]}")
    target.backend.disable(disabled)
    with pytest.raises(
        InvalidSpec, match=r"spec\.adopt\.kmsKeyId: .* is Disabled in the KMS"
    ) as refused:
        operations.reconcile(_key(second, disabled), target.backend, "contract")
    assert refused.value.reason == "AdoptionRefused"

"""What the client says when the ledger cannot answer."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from keyledger.client import KeyledgerClient
from keyledger.client.envelope import seal
from keyledger.errors import KeyNotUsable, LedgerUnavailable
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from tests.harness.net import free_port


def test_an_unreachable_ledger_is_named_without_sql(tmp_path: Path) -> None:
    client = KeyledgerClient(
        f"postgresql+psycopg://keyledger@127.0.0.1:{free_port()}/ledger?connect_timeout=2",
        [LocalBackend(tmp_path / "keys.json")],
    )
    with pytest.raises(LedgerUnavailable, match="ledger database is unreachable") as failure:
        client.encrypt("acme", "records", b"phi", {})
    assert "SELECT" not in str(failure.value)


def test_unknown_keys_and_versions_say_what_to_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_database(url)
    client = KeyledgerClient(url, [LocalBackend(tmp_path / "keys.json")])
    with pytest.raises(KeyNotUsable, match=r"apply an EncryptionKey with spec\.tenant: acme"):
        client.encrypt("acme", "records", b"phi", {})
    stranger = seal(uuid.uuid4(), "acme", b"wrapped", bytes(32), b"phi", {})
    with pytest.raises(KeyNotUsable, match="does not hold: check that the client reads"):
        client.decrypt(stranger, {}, tenant="acme")


def test_a_service_outside_authorized_services_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_database(url)
    backend = LocalBackend(tmp_path / "keys.json")
    spec = KeySpec.from_resource(
        "records",
        {
            "tenant": "acme",
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "local"},
            "authorizedServices": ["records-api"],
        },
    )
    sessions = make_session_factory(make_engine(url))
    KeyOperations(sessions, actor="test").reconcile(
        KeyResource("uid-1", "tenant-acme", "records", 1, spec, {}), backend, "local"
    )

    blob = KeyledgerClient(sessions, [backend], service="records-api").encrypt(
        "acme", "records", b"phi", {}
    )
    billing = KeyledgerClient(sessions, [backend], service="billing")
    with pytest.raises(KeyNotUsable, match=r"'billing' is not in spec\.authorizedServices"):
        billing.encrypt("acme", "records", b"phi", {})
    with pytest.raises(KeyNotUsable, match=r"'billing' is not in spec\.authorizedServices"):
        billing.decrypt(blob, {}, tenant="acme")
    assert KeyledgerClient(sessions, [backend]).decrypt(blob, {}, tenant="acme") == b"phi"

"""The envelope-encryption client against every backend's real server.

The key's life is driven by the operator's own operations (KeyOperations) on a
real ledger, so the client meets versions exactly as the operator leaves them.
"""

from __future__ import annotations

import base64
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from keyledger.api import COMPROMISED_REQUESTED_AT, ROTATE_REQUESTED_AT
from keyledger.client import CacheLimits, KeyledgerClient
from keyledger.client.envelope import parse
from keyledger.errors import DecryptionFailed, KeyNotUsable
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.base import DataKey, KeyBackend
from keyledger.store.repository import KeyLedger
from tests.contract.target import ContractTarget

CONTEXT = {"tenant": "contract", "record": "patient-17"}
PHI = b"Jane Doe, DOB 1970-01-01, diagnosis: ..."


@dataclass
class Counting:
    """Counts the data-key calls the client makes; everything goes to the real backend."""

    backend: KeyBackend
    calls: dict[str, int] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.backend, name)
        if name in ("generate_data_key", "unwrap_data_key"):

            def counted(*args: Any) -> Any:
                self.calls[name] = self.calls.get(name, 0) + 1
                return attribute(*args)

            return counted
        return attribute


@dataclass
class Tenant:
    sessions: sessionmaker[Session]
    operations: KeyOperations
    backend: KeyBackend
    key: KeyResource
    requests: int = 0

    def reconcile(self, **annotations: str) -> None:
        self.key = KeyResource(
            self.key.uid,
            self.key.namespace,
            self.key.name,
            self.key.generation,
            self.key.spec,
            {**self.key.annotations, **annotations},
        )
        self.operations.reconcile(self.key, self.backend, "contract")

    def rotate(self) -> None:
        self.requests += 1
        self.reconcile(**{ROTATE_REQUESTED_AT: f"rotate-{self.requests}"})

    def compromise(self) -> None:
        self.requests += 1
        self.reconcile(**{COMPROMISED_REQUESTED_AT: f"leak-{self.requests}"})

    def active_id(self) -> uuid.UUID:
        with self.sessions() as session:
            record = KeyLedger(session).active(self.key.spec.tenant, self.key.spec.key_name)
            assert record is not None
            return record.id


@pytest.fixture
def tenant(target: ContractTarget, ledger: sessionmaker[Session]) -> Tenant:
    name = f"k{uuid.uuid4().hex[:10]}"
    spec = KeySpec.from_resource(
        name,
        {
            "tenant": "contract",
            "keyName": name,
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "contract"},
        },
    )
    key = KeyResource(str(uuid.uuid4()), "contract", name, 1, spec, {})
    state = Tenant(ledger, KeyOperations(ledger, actor="contract"), target.backend, key)
    state.reconcile()
    return state


def _client(tenant: Tenant, **options: Any) -> tuple[KeyledgerClient, Counting]:
    counting = Counting(tenant.backend)
    # version_check_s=0: every call reads the ledger, so lifecycle steps show at once.
    client = KeyledgerClient(tenant.sessions, [counting], version_check_s=0, **options)
    return client, counting


def test_round_trip_binds_the_context(tenant: Tenant) -> None:
    client, _ = _client(tenant)
    blob = client.encrypt("contract", tenant.key.spec.key_name, PHI, CONTEXT)
    assert PHI not in blob
    assert client.decrypt(blob, CONTEXT) == PHI
    with pytest.raises(DecryptionFailed, match="encryption context differs"):
        client.decrypt(blob, {**CONTEXT, "record": "patient-18"})


def test_data_written_before_rotations_still_decrypts(tenant: Tenant) -> None:
    client, _ = _client(tenant)
    name = tenant.key.spec.key_name
    written = {}
    for _ in range(3):
        written[tenant.active_id()] = client.encrypt("contract", name, PHI, CONTEXT)
        tenant.rotate()
    assert len(written) == 3
    current = client.encrypt("contract", name, PHI, CONTEXT)
    assert parse(current).key_id == tenant.active_id()
    assert parse(current).key_id not in written
    # A fresh client (no cached data keys) opens every version through the KMS.
    fresh, counting = _client(tenant)
    for key_id, blob in written.items():
        assert parse(blob).key_id == key_id
        assert fresh.decrypt(blob, CONTEXT) == PHI
    assert counting.calls["unwrap_data_key"] == 3


def test_one_data_key_serves_many_messages_within_the_limits(tenant: Tenant) -> None:
    client, counting = _client(tenant, limits=CacheLimits(max_messages=40))
    blobs = [client.encrypt("contract", tenant.key.spec.key_name, PHI, CONTEXT) for _ in range(100)]
    assert counting.calls["generate_data_key"] == 3  # 40 + 40 + 20 messages
    assert len({parse(b).wrapped_key for b in blobs}) == 3
    assert all(client.decrypt(b, CONTEXT) == PHI for b in blobs)
    assert counting.calls["unwrap_data_key"] == 3  # then from the decrypt cache


def test_a_compromised_version_no_longer_decrypts_and_is_not_used(tenant: Tenant) -> None:
    client, _ = _client(tenant)
    name = tenant.key.spec.key_name
    leaked = client.encrypt("contract", name, PHI, CONTEXT)
    assert client.decrypt(leaked, CONTEXT) == PHI  # its data key is cached now
    tenant.compromise()
    with pytest.raises(KeyNotUsable, match="COMPROMISED"):
        client.decrypt(leaked, CONTEXT)
    after = client.encrypt("contract", name, PHI, CONTEXT)
    assert parse(after).key_id == tenant.active_id() != parse(leaked).key_id
    assert client.decrypt(after, CONTEXT) == PHI


def test_last_use_is_recorded_in_batches(tenant: Tenant) -> None:
    client, _ = _client(tenant, usage_flush_s=3600)
    name = tenant.key.spec.key_name
    blob = client.encrypt("contract", name, PHI, CONTEXT)
    key_id = parse(blob).key_id

    def last_used() -> Any:
        with tenant.sessions() as session:
            record = KeyLedger(session).get(key_id)
            assert record is not None
            return record.last_used_at

    assert last_used() is None  # not written per call
    client.decrypt(blob, CONTEXT)
    client.close()
    first = last_used()
    assert first is not None
    client.encrypt("contract", name, PHI, CONTEXT)
    client.close()
    assert last_used() >= first


def test_no_data_key_reaches_the_ledger(tenant: Tenant) -> None:
    client, counting = _client(tenant)
    seen: list[DataKey] = []
    generate = counting.backend.generate_data_key

    def keep(ref: str) -> DataKey:
        seen.append(generate(ref))
        return seen[-1]

    counting.backend = _Spy(counting.backend, keep)
    client.encrypt("contract", tenant.key.spec.key_name, PHI, CONTEXT)
    client.close()
    assert seen
    with tenant.sessions() as session:
        tables = [
            r[0] for r in session.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        ]
        for table in tables:
            for row in session.execute(text(f'SELECT * FROM "{table}"')):
                dump = repr(tuple(row))
                for data_key in seen:
                    for spelling in _spellings(data_key.plaintext):
                        assert spelling not in dump
                assert "Jane Doe" not in dump


def _spellings(secret: bytes) -> list[str]:
    return [secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]]


@dataclass
class _Spy:
    backend: KeyBackend
    generate_data_key: Any

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def test_threads_share_one_client(tenant: Tenant) -> None:
    # Services call the client from many threads at once; caches start cold, so
    # several threads race to the KMS for the first data keys.
    client, _ = _client(tenant, limits=CacheLimits(max_messages=25))
    name = tenant.key.spec.key_name

    def work(n: int) -> bool:
        context = {"record": str(n)}
        blob = client.encrypt("contract", name, PHI + str(n).encode(), context)
        return client.decrypt(blob, context) == PHI + str(n).encode()

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(200)))
    client.close()

"""The envelope-encryption client against every backend's real server.

The key's life is driven by the operator's own operations (KeyOperations) on a
real ledger, so the client meets versions exactly as the operator leaves them.
Every test runs twice: with KeyledgerClient and with AsyncKeyledgerClient.
"""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from keyledger.api import COMPROMISED_REQUESTED_AT, ROTATE_REQUESTED_AT
from keyledger.client import AsyncKeyledgerClient, BreakGlass, CacheLimits, KeyledgerClient
from keyledger.client.envelope import parse, read_head
from keyledger.client.stream import full_reader
from keyledger.domain import KeyEventType
from keyledger.errors import (
    CiphertextInvalid,
    DecryptionFailed,
    KeyNotUsable,
    StreamTruncated,
    TenantMismatch,
    VersionCompromised,
)
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.base import DataKey, KeyBackend
from keyledger.store.repository import KeyLedger
from tests.contract.clients import AsyncDriven, Client
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
    return _new_key(target, ledger, "contract")


def _new_key(target: ContractTarget, ledger: sessionmaker[Session], tenant: str) -> Tenant:
    name = f"k{uuid.uuid4().hex[:10]}"
    spec = KeySpec.from_resource(
        name,
        {
            "tenant": tenant,
            "keyName": name,
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "contract"},
        },
    )
    key = KeyResource(str(uuid.uuid4()), tenant, name, 1, spec, {})
    state = Tenant(ledger, KeyOperations(ledger, actor="contract"), target.backend, key)
    state.reconcile()
    return state


MakeClient = Callable[..., tuple[Client, Counting]]


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest, tenant: Tenant) -> Iterator[MakeClient]:
    driven: list[AsyncDriven] = []

    def make(**options: Any) -> tuple[Client, Counting]:
        counting = Counting(tenant.backend)
        backends: list[KeyBackend] = [counting]
        # version_check_s=0: every call reads the ledger, so lifecycle steps show at once.
        if request.param == "sync":
            return KeyledgerClient(
                tenant.sessions, backends, version_check_s=0, **options
            ), counting
        client = AsyncDriven(
            AsyncKeyledgerClient(tenant.sessions, backends, version_check_s=0, **options)
        )
        driven.append(client)
        return client, counting

    yield make
    for client in driven:
        client.stop()


def test_round_trip_binds_the_context(tenant: Tenant, make_client: MakeClient) -> None:
    client, _ = make_client()
    blob = client.encrypt("contract", tenant.key.spec.key_name, PHI, CONTEXT)
    assert PHI not in blob
    assert client.decrypt(blob, CONTEXT, tenant="contract") == PHI
    with pytest.raises(DecryptionFailed, match="encryption context differs"):
        client.decrypt(blob, {**CONTEXT, "record": "patient-18"}, tenant="contract")


def test_data_written_before_rotations_still_decrypts(
    tenant: Tenant, make_client: MakeClient
) -> None:
    client, _ = make_client()
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
    fresh, counting = make_client()
    for key_id, blob in written.items():
        assert parse(blob).key_id == key_id
        assert fresh.decrypt(blob, CONTEXT, tenant="contract") == PHI
    assert counting.calls["unwrap_data_key"] == 3


def test_one_data_key_serves_many_messages_within_the_limits(
    tenant: Tenant, make_client: MakeClient
) -> None:
    client, counting = make_client(limits=CacheLimits(max_messages=40))
    blobs = [client.encrypt("contract", tenant.key.spec.key_name, PHI, CONTEXT) for _ in range(100)]
    assert counting.calls["generate_data_key"] == 3  # 40 + 40 + 20 messages
    assert len({parse(b).wrapped_key for b in blobs}) == 3
    assert all(client.decrypt(b, CONTEXT, tenant="contract") == PHI for b in blobs)
    assert counting.calls["unwrap_data_key"] == 3  # then from the decrypt cache


def test_a_compromised_version_no_longer_decrypts_and_is_not_used(
    tenant: Tenant, make_client: MakeClient
) -> None:
    client, _ = make_client()
    name = tenant.key.spec.key_name
    leaked = client.encrypt("contract", name, PHI, CONTEXT)
    assert client.decrypt(leaked, CONTEXT, tenant="contract") == PHI  # its data key is cached now
    tenant.compromise()
    with pytest.raises(KeyNotUsable, match="COMPROMISED"):
        client.decrypt(leaked, CONTEXT, tenant="contract")
    after = client.encrypt("contract", name, PHI, CONTEXT)
    assert parse(after).key_id == tenant.active_id() != parse(leaked).key_id
    assert client.decrypt(after, CONTEXT, tenant="contract") == PHI


def test_last_use_is_recorded_in_batches(tenant: Tenant, make_client: MakeClient) -> None:
    client, _ = make_client(usage_flush_s=3600)
    name = tenant.key.spec.key_name
    blob = client.encrypt("contract", name, PHI, CONTEXT)
    key_id = parse(blob).key_id

    def last_used() -> Any:
        with tenant.sessions() as session:
            record = KeyLedger(session).get(key_id)
            assert record is not None
            return record.last_used_at

    assert last_used() is None  # not written per call
    client.decrypt(blob, CONTEXT, tenant="contract")
    client.close()
    first = last_used()
    assert first is not None
    client.encrypt("contract", name, PHI, CONTEXT)
    client.close()
    assert last_used() >= first


def test_no_data_key_reaches_the_ledger(tenant: Tenant, make_client: MakeClient) -> None:
    client, counting = make_client()
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


def test_threads_share_one_client(tenant: Tenant, make_client: MakeClient) -> None:
    # Services call the client from many threads at once; caches start cold, so
    # several threads race to the KMS for the first data keys.
    client, _ = make_client(limits=CacheLimits(max_messages=25))
    name = tenant.key.spec.key_name

    def work(n: int) -> bool:
        context = {"record": str(n)}
        blob = client.encrypt("contract", name, PHI + str(n).encode(), context)
        return client.decrypt(blob, context, tenant="contract") == PHI + str(n).encode()

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(200)))
    client.close()


# -- tenants bound to ciphertexts -----------------------------------------------------


def test_a_blob_is_refused_on_behalf_of_another_tenant(
    tenant: Tenant, make_client: MakeClient, target: ContractTarget
) -> None:
    other = _new_key(target, tenant.sessions, "other-tenant")
    client, counting = make_client()
    blob = client.encrypt("contract", tenant.key.spec.key_name, PHI, CONTEXT)
    theirs = client.encrypt("other-tenant", other.key.spec.key_name, PHI, CONTEXT)
    with pytest.raises(TenantMismatch) as refused:
        client.decrypt(blob, CONTEXT, tenant="other-tenant")
    assert "'contract'" in str(refused.value) and "'other-tenant'" in str(refused.value)
    with pytest.raises(TenantMismatch, match="sealed for tenant 'other-tenant'"):
        client.decrypt(theirs, CONTEXT, tenant="contract")
    assert "unwrap_data_key" not in counting.calls  # refused before the KMS is asked
    assert client.decrypt(blob, CONTEXT, tenant="contract") == PHI
    assert client.decrypt(theirs, CONTEXT, tenant="other-tenant") == PHI


def _old_record(tenant: Tenant, format_: int, plaintext: bytes, context: dict[str, str]) -> bytes:
    """A blob as clients sealed it before format 4, built by hand: format 1 (before
    tenants were bound) or 2 (the tenant bound); both bind the nonce into the AAD."""
    key_id = tenant.active_id()
    with tenant.sessions() as session:
        record = KeyLedger(session).get(key_id)
        assert record is not None and record.kms_key_id is not None
        ref = record.kms_key_id
    data_key = tenant.backend.generate_data_key(ref)
    nonce = os.urandom(12)
    wrapped = data_key.wrapped
    bound_tenant = b"" if format_ == 1 else b"\x00\x08contract"
    header = (
        b"KLE"
        + bytes([format_])
        + key_id.bytes
        + bound_tenant
        + len(wrapped).to_bytes(2, "big")
        + wrapped
        + nonce
    )
    canonical = json.dumps(context, sort_keys=True, separators=(",", ":")).encode()
    aad = header + b"\x00" + canonical
    return header + AESGCM(data_key.plaintext).encrypt(nonce, plaintext, aad)


def test_a_blob_in_the_old_format_still_opens_for_its_tenant_only(
    tenant: Tenant, make_client: MakeClient, target: ContractTarget
) -> None:
    _new_key(target, tenant.sessions, "other-tenant")
    client, _ = make_client()
    old = _old_record(tenant, 1, PHI, CONTEXT)
    assert client.decrypt(old, CONTEXT, tenant="contract") == PHI
    # No tenant in its header: the ledger's owner of its key version decides.
    with pytest.raises(TenantMismatch, match="sealed for tenant 'contract'"):
        client.decrypt(old, CONTEXT, tenant="other-tenant")
    # Re-sealing it binds the tenant, even under the same key version.
    bound = client.rewrap(old, CONTEXT, tenant="contract")
    assert bound[3] == 4 and parse(bound).key_id == parse(old).key_id
    assert client.decrypt(bound, CONTEXT, tenant="contract") == PHI


def test_a_blob_in_format_2_opens_beside_new_ones_from_the_cache_too(
    tenant: Tenant, make_client: MakeClient
) -> None:
    client, counting = make_client()
    old = _old_record(tenant, 2, PHI, CONTEXT)
    new = client.encrypt("contract", tenant.key.spec.key_name, PHI, CONTEXT)
    assert new[3] == 4
    assert client.decrypt(old, CONTEXT, tenant="contract") == PHI
    assert client.decrypt(new, CONTEXT, tenant="contract") == PHI
    calls = dict(counting.calls)
    for _ in range(3):  # from the cached openers now, taking turns
        assert client.decrypt(old, CONTEXT, tenant="contract") == PHI
        assert client.decrypt(new, CONTEXT, tenant="contract") == PHI
    assert counting.calls == calls
    with pytest.raises(DecryptionFailed):
        client.decrypt(old, {"other": "context"}, tenant="contract")
    with pytest.raises(TenantMismatch):
        client.decrypt(old, CONTEXT, tenant="other-tenant")
    # Under the ACTIVE version and bound to its tenant: nothing to seal again.
    assert client.rewrap(old, CONTEXT, tenant="contract") is old


# -- streams -------------------------------------------------------------------------


def test_streams_round_trip_across_a_rotation(tenant: Tenant, make_client: MakeClient) -> None:
    client, counting = make_client()
    name = tenant.key.spec.key_name
    payload = os.urandom(3 * 256 * 1024 + 123)
    sealed = []
    for _ in range(2):
        sink = io.BytesIO()
        written = client.encrypt_stream(
            "contract", name, io.BytesIO(payload), sink, CONTEXT, segment_bytes=256 * 1024
        )
        assert written == len(payload)
        sealed.append(sink.getvalue())
        tenant.rotate()
    assert counting.calls["generate_data_key"] == 2  # one data key per stream
    for stream in sealed:
        out = io.BytesIO()
        assert client.decrypt_stream(io.BytesIO(stream), out, CONTEXT, tenant="contract") == len(
            payload
        )
        assert out.getvalue() == payload
    with pytest.raises(StreamTruncated):
        client.decrypt_stream(
            io.BytesIO(sealed[0][:-100]), io.BytesIO(), CONTEXT, tenant="contract"
        )
    with pytest.raises(TenantMismatch):
        client.decrypt_stream(io.BytesIO(sealed[0]), io.BytesIO(), CONTEXT, tenant="someone")
    with pytest.raises(CiphertextInvalid, match="decrypt_stream"):
        client.decrypt(sealed[0], CONTEXT, tenant="contract")


# -- compromise: break glass and re-sealing -------------------------------------------


GLASS = BreakGlass(actor="alice@security.example", reason="INC-42: re-seal after the leak")


def _kms_ref(tenant: Tenant, key_id: uuid.UUID) -> str:
    with tenant.sessions() as session:
        record = KeyLedger(session).get(key_id)
        assert record is not None and record.kms_key_id is not None
        return record.kms_key_id


def test_break_glass_opens_are_audited(tenant: Tenant, make_client: MakeClient) -> None:
    client, _ = make_client(service="records-api")
    leaked = client.encrypt("contract", tenant.key.spec.key_name, PHI, CONTEXT)
    leaked_id = parse(leaked).key_id
    tenant.compromise()

    with pytest.raises(VersionCompromised, match="COMPROMISED"):
        client.decrypt(leaked, CONTEXT, tenant="contract")
    with tenant.sessions() as session:
        refused = KeyLedger(session).get(leaked_id)
        assert refused is not None and refused.last_refused_at is not None
    # The KMS disabled the version too: break glass alone does not get past that...
    with pytest.raises(KeyNotUsable, match="KMS administrator must enable"):
        client.decrypt(leaked, CONTEXT, tenant="contract", break_glass=GLASS)
    # ...until the KMS's administrator enables it for the re-encryption.
    ref = _kms_ref(tenant, leaked_id)
    tenant.backend.enable(ref)
    try:
        assert client.decrypt(leaked, CONTEXT, tenant="contract", break_glass=GLASS) == PHI
    finally:
        tenant.backend.disable(ref)

    with tenant.sessions() as session:
        opened = [
            e
            for e in KeyLedger(session).events(leaked_id)
            if e.event_type is KeyEventType.BREAK_GLASS_OPENED
        ]
    assert len(opened) == 2  # every attempt, the one the KMS refused included
    for event in opened:
        assert (event.actor, event.reason) == (GLASS.actor, GLASS.reason)
        assert event.details is not None
        assert event.details["service"] == "records-api"
        assert event.details["pid"] == os.getpid()
        assert {"processUser", "host", "ledgerRole", "ciphertext"} <= event.details.keys()
        assert PHI.decode() not in repr(event.details)


def test_rewrap_moves_data_off_a_compromised_version(
    tenant: Tenant, make_client: MakeClient
) -> None:
    client, _ = make_client()
    name = tenant.key.spec.key_name
    contexts = [{"record": str(n)} for n in range(5)]
    blobs = [client.encrypt("contract", name, PHI + bytes([n]), c) for n, c in enumerate(contexts)]
    leaked_id = parse(blobs[0]).key_id
    tenant.compromise()
    with pytest.raises(VersionCompromised):
        client.rewrap(blobs[0], contexts[0], tenant="contract")

    ref = _kms_ref(tenant, leaked_id)
    tenant.backend.enable(ref)
    try:
        rewrapped = [
            client.rewrap(b, c, tenant="contract", break_glass=GLASS)
            for b, c in zip(blobs, contexts, strict=True)
        ]
    finally:
        tenant.backend.disable(ref)
    assert {parse(b).key_id for b in rewrapped} == {tenant.active_id()}
    for n, (blob, context) in enumerate(zip(rewrapped, contexts, strict=True)):
        assert client.decrypt(blob, context, tenant="contract") == PHI + bytes([n])
        # Already under the active version: nothing to do, the same bytes back.
        assert client.rewrap(blob, context, tenant="contract") is blob


def test_rewrap_stream_moves_a_backup_off_a_compromised_version(
    tenant: Tenant, make_client: MakeClient
) -> None:
    client, _ = make_client()
    payload = os.urandom(5 * 64 * 1024 + 17)
    sealed = io.BytesIO()
    client.encrypt_stream(
        "contract", tenant.key.spec.key_name, io.BytesIO(payload), sealed, CONTEXT,
        segment_bytes=64 * 1024,
    )  # fmt: skip
    backup = sealed.getvalue()
    leaked_id = parse_stream(backup)
    tenant.compromise()

    ref = _kms_ref(tenant, leaked_id)
    tenant.backend.enable(ref)
    try:
        # Cut short on the way in: refused, though the re-sealing side saw a clean end.
        with pytest.raises(StreamTruncated):
            client.rewrap_stream(
                io.BytesIO(backup[:-1000]), io.BytesIO(), CONTEXT, tenant="contract",
                break_glass=GLASS,
            )  # fmt: skip
        resealed = io.BytesIO()
        assert client.rewrap_stream(
            io.BytesIO(backup), resealed, CONTEXT, tenant="contract", break_glass=GLASS
        )
    finally:
        tenant.backend.disable(ref)
    assert parse_stream(resealed.getvalue()) == tenant.active_id()
    opened = io.BytesIO()
    client.decrypt_stream(io.BytesIO(resealed.getvalue()), opened, CONTEXT, tenant="contract")
    assert opened.getvalue() == payload
    # Already current: nothing to write.
    untouched = io.BytesIO()
    assert not client.rewrap_stream(
        io.BytesIO(resealed.getvalue()), untouched, CONTEXT, tenant="contract"
    )
    assert untouched.getvalue() == b""


def parse_stream(sealed: bytes) -> uuid.UUID:
    return read_head(full_reader(io.BytesIO(sealed))).key_id

"""The client's cached calls keep every check a ledger read would make: a version
change shows within version_check_s (at once when the ledger says so), a data key
retires at its limits, another tenant's blob is refused, and uses are recorded."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.orm import Session, sessionmaker

from keyledger.api import COMPROMISED_REQUESTED_AT, ROTATE_REQUESTED_AT
from keyledger.client import CacheLimits, KeyledgerClient
from keyledger.client.envelope import FORMAT_NONCE_BOUND, aad, pack_head, parse, read_head
from keyledger.errors import (
    CiphertextInvalid,
    DecryptionFailed,
    TenantMismatch,
    VersionCompromised,
)
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.base import DataKey
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from keyledger.store.repository import KeyLedger

CONTEXT = {"record": "r-1"}


class CountingBackend(LocalBackend):
    generated = 0
    unwrapped = 0
    # What happens elsewhere while the KMS answers (a ledger notification).
    meanwhile: Callable[[], None] = staticmethod(lambda: None)

    def generate_data_key(self, ref: str) -> DataKey:
        self.generated += 1
        self.meanwhile()
        return super().generate_data_key(ref)

    def unwrap_data_key(self, ref: str, wrapped: bytes) -> bytes:
        self.unwrapped += 1
        self.meanwhile()
        return super().unwrap_data_key(ref, wrapped)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Ledger:
    sessions: sessionmaker[Session]
    backend: CountingBackend
    key: KeyResource
    clock: Clock = field(default_factory=Clock)
    requests: int = 0

    def client(
        self,
        limits: CacheLimits | None = None,
        version_check_s: float = 2.0,
        usage_flush_s: float = 60.0,
    ) -> KeyledgerClient:
        return KeyledgerClient(
            self.sessions,
            [self.backend],
            limits=limits,
            version_check_s=version_check_s,
            usage_flush_s=usage_flush_s,
            listen=False,
            clock=self.clock,
        )

    def annotate(self, annotation: str) -> None:
        self.requests += 1
        self.key = KeyResource(
            self.key.uid,
            self.key.namespace,
            self.key.name,
            self.key.generation,
            self.key.spec,
            {**self.key.annotations, annotation: f"request-{self.requests}"},
        )
        KeyOperations(self.sessions, actor="test").reconcile(self.key, self.backend, "local")


def _key(tenant: str) -> KeyResource:
    spec = KeySpec.from_resource(
        "records",
        {
            "tenant": tenant,
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "local"},
        },
    )
    return KeyResource(str(uuid.uuid4()), tenant, "records", 1, spec, {})


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_database(url)
    sessions = make_session_factory(make_engine(url))
    key = _key("acme")
    state = Ledger(sessions, CountingBackend(tmp_path / "keys.json"), key)
    KeyOperations(sessions, actor="test").reconcile(key, state.backend, "local")
    return state


def test_a_rotation_shows_within_the_version_check(ledger: Ledger) -> None:
    client = ledger.client(version_check_s=2.0)
    first = parse(client.encrypt("acme", "records", b"phi", CONTEXT)).key_id
    ledger.annotate(ROTATE_REQUESTED_AT)
    ledger.clock.now += 1.9
    assert parse(client.encrypt("acme", "records", b"phi", CONTEXT)).key_id == first
    ledger.clock.now += 0.1
    assert parse(client.encrypt("acme", "records", b"phi", CONTEXT)).key_id != first


def test_a_forget_drops_the_cached_sealer_and_opener_at_once(ledger: Ledger) -> None:
    client = ledger.client(version_check_s=3600)
    blob = client.encrypt("acme", "records", b"phi", CONTEXT)
    leaked = parse(blob).key_id
    assert client.decrypt(blob, CONTEXT, tenant="acme") == b"phi"
    ledger.annotate(COMPROMISED_REQUESTED_AT)
    # Without a notification the cached calls go on until the check is due ...
    assert client.decrypt(blob, CONTEXT, tenant="acme") == b"phi"
    # ... and the ledger's notification ends them, on both paths.
    client._forget_key("acme", "records", leaked)
    with pytest.raises(VersionCompromised):
        client.decrypt(blob, CONTEXT, tenant="acme")
    assert parse(client.encrypt("acme", "records", b"phi", CONTEXT)).key_id != leaked


def test_an_opener_the_cache_dropped_or_never_held_opens_nothing_from_it(
    ledger: Ledger,
) -> None:
    """decrypt tries the last opener it used before the cache: one that the cache no
    longer holds (forgotten, evicted) or never held (caching off) must not serve."""
    client = ledger.client(version_check_s=3600)
    blob = client.encrypt("acme", "records", b"phi", CONTEXT)
    client.decrypt(blob, CONTEXT, tenant="acme")
    client._forget_everything()  # what a lost ledger connection does
    client.decrypt(blob, CONTEXT, tenant="acme")
    assert ledger.backend.unwrapped == 2
    client.encrypt("acme", "records", b"phi", CONTEXT)  # the last sealer, dropped too
    assert ledger.backend.generated == 2

    bounded = ledger.client(limits=CacheLimits(max_decrypt_entries=1), version_check_s=3600)
    blob = bounded.encrypt("acme", "records", b"phi", CONTEXT)
    bounded.decrypt(blob, CONTEXT, tenant="acme")
    sealed = io.BytesIO()
    bounded.encrypt_stream("acme", "records", io.BytesIO(b"backup"), sealed, CONTEXT)
    sealed.seek(0)
    bounded.decrypt_stream(sealed, io.BytesIO(), CONTEXT, tenant="acme")  # takes the place
    bounded.decrypt(blob, CONTEXT, tenant="acme")
    assert ledger.backend.unwrapped == 5

    off = ledger.client(limits=CacheLimits(max_decrypt_entries=0), version_check_s=3600)
    blob = off.encrypt("acme", "records", b"phi", CONTEXT)
    for _ in range(2):
        assert off.decrypt(blob, CONTEXT, tenant="acme") == b"phi"
    assert ledger.backend.unwrapped == 7


def test_a_forget_while_the_kms_answers_is_not_undone_by_caching_its_answer(
    ledger: Ledger,
) -> None:
    """A data key made or unwrapped across a forget serves its own call only: cached
    (or kept as the last one used) it would outlive what the ledger said changed."""
    client = ledger.client(version_check_s=3600)
    ledger.backend.meanwhile = lambda: client._forget_key("acme", "records", None)
    blob = client.encrypt("acme", "records", b"phi", CONTEXT)
    for _ in range(2):
        client.encrypt("acme", "records", b"phi", CONTEXT)
        assert client.decrypt(blob, CONTEXT, tenant="acme") == b"phi"
    assert (ledger.backend.generated, ledger.backend.unwrapped) == (3, 2)
    ledger.backend.meanwhile = lambda: None
    for _ in range(2):
        client.encrypt("acme", "records", b"phi", CONTEXT)
        client.decrypt(blob, CONTEXT, tenant="acme")
    assert (ledger.backend.generated, ledger.backend.unwrapped) == (4, 3)


def test_a_compromise_stops_cached_decrypts_within_the_version_check(ledger: Ledger) -> None:
    client = ledger.client(version_check_s=2.0)
    blob = client.encrypt("acme", "records", b"phi", CONTEXT)
    assert client.decrypt(blob, CONTEXT, tenant="acme") == b"phi"
    ledger.annotate(COMPROMISED_REQUESTED_AT)
    ledger.clock.now += 2.0
    with pytest.raises(VersionCompromised):
        client.decrypt(blob, CONTEXT, tenant="acme")


def test_cached_data_keys_retire_at_their_limits(ledger: Ledger) -> None:
    client = ledger.client(limits=CacheLimits(max_age_s=60, max_messages=2, max_bytes=1 << 20))
    wrapped = [parse(client.encrypt("acme", "records", b"phi", {})).wrapped_key for _ in range(5)]
    assert wrapped[0] == wrapped[1] != wrapped[2] == wrapped[3] != wrapped[4]
    assert ledger.backend.generated == 3
    ledger.clock.now += 60
    assert parse(client.encrypt("acme", "records", b"phi", {})).wrapped_key != wrapped[4]
    big = ledger.client(limits=CacheLimits(max_bytes=100))
    first = parse(big.encrypt("acme", "records", b"x" * 60, {})).wrapped_key
    assert parse(big.encrypt("acme", "records", b"x" * 60, {})).wrapped_key != first


def test_reading_the_version_every_call_still_reuses_the_data_key(ledger: Ledger) -> None:
    client = ledger.client(version_check_s=0)
    blobs = [client.encrypt("acme", "records", b"phi", CONTEXT) for _ in range(3)]
    assert ledger.backend.generated == 1
    for blob in blobs:
        assert client.decrypt(blob, CONTEXT, tenant="acme") == b"phi"
    assert ledger.backend.unwrapped == 1


def test_an_unwrapped_data_key_is_kept_until_its_age_limit(ledger: Ledger) -> None:
    client = ledger.client(limits=CacheLimits(max_age_s=60), version_check_s=2.0)
    blob = client.encrypt("acme", "records", b"phi", CONTEXT)
    for _ in range(3):
        assert client.decrypt(blob, CONTEXT, tenant="acme") == b"phi"
        ledger.clock.now += 2.5  # past each version check: read again, key kept
    assert ledger.backend.unwrapped == 1
    ledger.clock.now += 60
    assert client.decrypt(blob, CONTEXT, tenant="acme") == b"phi"
    assert ledger.backend.unwrapped == 2


def test_a_cached_opener_refuses_another_tenant(ledger: Ledger) -> None:
    client = ledger.client()
    blob = client.encrypt("acme", "records", b"phi", CONTEXT)
    assert client.decrypt(blob, CONTEXT, tenant="acme") == b"phi"
    unwrapped = ledger.backend.unwrapped
    with pytest.raises(TenantMismatch):
        client.decrypt(bytes(blob), CONTEXT, tenant="globex")
    assert ledger.backend.unwrapped == unwrapped


def test_cached_calls_record_their_last_use(ledger: Ledger) -> None:
    client = ledger.client(usage_flush_s=60)
    blob = client.encrypt("acme", "records", b"phi", CONTEXT)
    key_id = parse(blob).key_id

    def last_used() -> object:
        with ledger.sessions() as session:
            record = KeyLedger(session).get(key_id)
            assert record is not None
            return record.last_used_at

    client.usage.flush()
    first = last_used()
    assert first is not None
    ledger.clock.now += 30
    client.decrypt(blob, CONTEXT, tenant="acme")
    assert last_used() == first  # batched, not written per call
    ledger.clock.now += 30
    client.encrypt("acme", "records", b"phi", CONTEXT)  # the interval is up: flushed
    assert last_used() != first


def test_cached_decrypts_write_usage_when_it_falls_due(ledger: Ledger) -> None:
    client = ledger.client(version_check_s=3600, usage_flush_s=60)
    blob = client.encrypt("acme", "records", b"phi", CONTEXT)
    client.decrypt(blob, CONTEXT, tenant="acme")
    pending = client.usage.flush_due
    ledger.clock.now += 59
    client.decrypt(blob, CONTEXT, tenant="acme")
    assert client.usage.flush_due == pending
    ledger.clock.now += 1
    client.decrypt(blob, CONTEXT, tenant="acme")
    assert client.usage.flush_due == ledger.clock.now + 60  # flushed by that call


@pytest.mark.parametrize("size", [0, 1024, (1 << 16) - 1, 1 << 16, 1 << 20])
def test_cached_decrypts_open_records_of_every_size(ledger: Ledger, size: int) -> None:
    """decrypt's cached path spells out Opener.open: held to the same results."""
    client = ledger.client(version_check_s=3600)
    plaintext = os.urandom(size)
    blob = client.encrypt("acme", "records", plaintext, CONTEXT)
    client.decrypt(blob, CONTEXT, tenant="acme")
    unwrapped = ledger.backend.unwrapped
    opener = client._last_opener
    assert opener is not None

    def both(stored: bytes | bytearray, context: dict[str, str]) -> list[object]:
        """What the cached decrypt and Opener.open each make of `stored`."""
        head, nonce = opener.split(stored)
        outcomes: list[object] = []
        attempts: tuple[Callable[[], bytes], ...] = (
            lambda: client.decrypt(stored, context, tenant="acme"),
            lambda: opener.open(stored, head, nonce, context, ledger.clock.now),
        )
        for open_it in attempts:
            try:
                outcomes.append(open_it())
            except DecryptionFailed as refused:
                outcomes.append((type(refused), str(refused)))
        return outcomes

    for stored in (blob, bytes(blob)):
        assert both(stored, CONTEXT) == [plaintext, plaintext]
        refused = both(stored, {"record": "r-2"})
        assert refused[0] == refused[1] and isinstance(refused[0], tuple)
        altered = bytearray(stored)
        altered[-1] ^= 1
        refused = both(altered, CONTEXT)
        assert refused[0] == refused[1] and isinstance(refused[0], tuple)
    assert ledger.backend.unwrapped == unwrapped  # all of them from the cache


def test_a_context_changed_in_place_is_bound_afresh(ledger: Ledger) -> None:
    client = ledger.client()
    context = {"record": "r-1"}
    first = client.encrypt("acme", "records", b"one", context)
    assert client.decrypt(first, context, tenant="acme") == b"one"
    context["record"] = "r-2"
    second = client.encrypt("acme", "records", b"two", context)
    assert client.decrypt(second, {"record": "r-2"}, tenant="acme") == b"two"
    with pytest.raises(DecryptionFailed):
        client.decrypt(second, {"record": "r-1"}, tenant="acme")
    with pytest.raises(DecryptionFailed):
        client.decrypt(first, context, tenant="acme")
    assert client.decrypt(first, {"record": "r-1"}, tenant="acme") == b"one"


def test_heads_of_other_lengths_are_opened_from_the_cache_too(ledger: Ledger) -> None:
    """decrypt splits a blob at the length of the last head it opened; a head of
    another length (a longer tenant name) is read, and its opener still found."""
    other = _key("globex-health")
    KeyOperations(ledger.sessions, actor="test").reconcile(other, ledger.backend, "local")
    client = ledger.client(version_check_s=3600)
    acme = client.encrypt("acme", "records", b"acme phi", CONTEXT)
    globex = client.encrypt("globex-health", "records", b"globex phi", CONTEXT)
    assert len(parse(acme).head.raw) != len(parse(globex).head.raw)
    for _ in range(3):
        assert client.decrypt(acme, CONTEXT, tenant="acme") == b"acme phi"
        assert client.decrypt(bytes(globex), CONTEXT, tenant="globex-health") == b"globex phi"
    assert ledger.backend.unwrapped == 2
    with pytest.raises(TenantMismatch):
        client.decrypt(globex, CONTEXT, tenant="acme")
    header = len(parse(acme).header)
    for cut in (header + 15, header - 5, header + 15):  # the tag, the nonce cut short
        with pytest.raises(CiphertextInvalid, match="truncated"):
            client.decrypt(acme[:cut], CONTEXT, tenant="acme")
    assert ledger.backend.unwrapped == 2


def _format_2(ledger: Ledger, plaintext: bytes) -> bytes:
    """A record as clients sealed it before format 4 (its nonce in the AAD), by hand."""
    with ledger.sessions() as session:
        version = KeyLedger(session).active("acme", "records")
        assert version is not None and version.kms_key_id is not None
    data_key = ledger.backend.generate_data_key(version.kms_key_id)
    nonce = os.urandom(12)
    header = pack_head(FORMAT_NONCE_BOUND, version.id, "acme", data_key.wrapped) + nonce
    return header + AESGCM(data_key.plaintext).encrypt(nonce, plaintext, aad(header, CONTEXT))


def test_format_2_records_open_from_the_cache_beside_format_4_ones(ledger: Ledger) -> None:
    """decrypt's cached path joins the nonce into a format 2 record's AAD, and only there."""
    client = ledger.client(version_check_s=3600)
    old = _format_2(ledger, b"old phi")
    new = client.encrypt("acme", "records", b"new phi", CONTEXT)
    assert (old[3], new[3]) == (2, 4)
    assert client.decrypt(old, CONTEXT, tenant="acme") == b"old phi"
    assert client.decrypt(new, CONTEXT, tenant="acme") == b"new phi"
    unwrapped = ledger.backend.unwrapped
    for _ in range(3):
        assert client.decrypt(old, CONTEXT, tenant="acme") == b"old phi"
        assert client.decrypt(new, CONTEXT, tenant="acme") == b"new phi"
    for blob in (old, bytes(new)):
        with pytest.raises(DecryptionFailed):
            client.decrypt(blob, {"record": "r-2"}, tenant="acme")
        altered = bytearray(blob)
        altered[len(parse(blob).header) - 1] ^= 1  # the nonce's last byte
        with pytest.raises(DecryptionFailed):
            client.decrypt(altered, CONTEXT, tenant="acme")
    assert ledger.backend.unwrapped == unwrapped  # all of them from the cache


def test_a_stream_is_not_opened_as_a_record_after_decrypt_stream(ledger: Ledger) -> None:
    client = ledger.client(version_check_s=3600)
    blob = client.encrypt("acme", "records", b"phi", CONTEXT)
    assert client.decrypt(blob, CONTEXT, tenant="acme") == b"phi"
    sealed = io.BytesIO()
    client.encrypt_stream("acme", "records", io.BytesIO(b"backup"), sealed, CONTEXT)
    stream = sealed.getvalue()
    # The same length as the record's head: decrypt's first split finds the stream's.
    assert len(read_head(io.BytesIO(stream).read).raw) == len(parse(blob).head.raw)
    client.decrypt_stream(io.BytesIO(stream), io.BytesIO(), CONTEXT, tenant="acme")
    with pytest.raises(CiphertextInvalid, match="decrypt_stream"):
        client.decrypt(stream, CONTEXT, tenant="acme")

"""The Cloud KMS test server's rules, without gRPC: the version state machine over time,
the id, label and duration rules it must enforce as Cloud KMS does, and which
service-account tokens it accepts."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from google.auth import crypt, jwt

from tests.harness.gcp_kms.auth import ServiceAccount, accepts
from tests.harness.gcp_kms.keys import KeyStore, KmsFault, State, Status

LOCATION = "projects/p/locations/global"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _store_with_key(clock: Clock) -> tuple[KeyStore, str]:
    store = KeyStore(now=clock)
    store.create_key_ring(LOCATION, "ring")
    key = store.create_crypto_key(f"{LOCATION}/keyRings/ring", "key", {}, timedelta(days=1))
    return store, key.name


def _fault(status: Status) -> pytest.RaisesExc[KmsFault]:
    return pytest.raises(KmsFault, check=lambda fault: fault.status is status)


def test_a_scheduled_version_is_destroyed_at_its_time_and_its_material_erased() -> None:
    clock = Clock()
    store, key = _store_with_key(clock)
    _, ciphertext = store.encrypt(key, b"data", b"aad")[1:]
    destroyed = store.destroy(f"{key}/cryptoKeyVersions/1")
    assert (destroyed.state, destroyed.destroy_time) == (
        State.DESTROY_SCHEDULED,
        clock.now + timedelta(days=1),
    )
    with _fault(Status.FAILED_PRECONDITION):
        store.decrypt(key, ciphertext, b"aad")

    clock.now += timedelta(days=1)
    (version,) = store.versions(key)
    assert (version.state, version.material) == (State.DESTROYED, None)
    with _fault(Status.FAILED_PRECONDITION):
        store.set_state(f"{key}/cryptoKeyVersions/1", State.ENABLED)
    with _fault(Status.FAILED_PRECONDITION):
        store.destroy(f"{key}/cryptoKeyVersions/1")


def test_only_an_enabled_version_encrypts_decrypts_or_becomes_primary() -> None:
    store, key = _store_with_key(Clock())
    _, v2 = store.add_version(key)
    _, _, ciphertext = store.encrypt(f"{key}/cryptoKeyVersions/2", b"data", b"")
    store.set_state(f"{key}/cryptoKeyVersions/2", State.DISABLED)
    for refused in (
        lambda: store.set_primary(key, "2"),
        lambda: store.encrypt(f"{key}/cryptoKeyVersions/2", b"data", b""),
        lambda: store.decrypt(key, ciphertext, b""),
    ):
        with _fault(Status.FAILED_PRECONDITION):
            refused()
    store.set_state(f"{key}/cryptoKeyVersions/2", State.ENABLED)
    assert store.set_primary(key, str(v2.number)).primary == 2
    assert store.decrypt(key, ciphertext, b"")[1] == b"data"
    with _fault(Status.INVALID_ARGUMENT):
        store.decrypt(key, ciphertext, b"other aad")


def test_ids_labels_and_durations_follow_the_documented_rules() -> None:
    store, key = _store_with_key(Clock())
    ring = f"{LOCATION}/keyRings/ring"
    with _fault(Status.ALREADY_EXISTS):
        store.create_key_ring(LOCATION, "ring")
    with _fault(Status.INVALID_ARGUMENT):
        store.create_crypto_key(ring, "no.dots", {}, None)
    with _fault(Status.INVALID_ARGUMENT):
        store.create_crypto_key(ring, "short", {}, timedelta(hours=23))
    with _fault(Status.INVALID_ARGUMENT):
        store.set_labels(key, {"Upper": "x"})
    with _fault(Status.INVALID_ARGUMENT):
        store.set_labels(key, {f"k{n}": "" for n in range(65)})
    with _fault(Status.NOT_FOUND):
        store.crypto_key(f"{ring}/cryptoKeys/missing")
    assert store.create_crypto_key(ring, "default", {}, None).destroy_scheduled == timedelta(
        days=30
    )


def _token(account: ServiceAccount, **claims: object) -> str:
    # google-auth's own signer and encoder: the token the SDK would send.
    info = json.loads(account.key_file("p"))
    signer = crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]
    now = int(time.time())
    payload = {
        "iss": account.email,
        "sub": account.email,
        "iat": now,
        "exp": now + 3600,
        "scope": "https://www.googleapis.com/auth/cloudkms",
        **claims,
    }
    token: bytes = jwt.encode(signer, payload)  # type: ignore[no-untyped-call]
    return f"Bearer {token.decode()}"


def test_only_a_known_accounts_timely_token_with_the_kms_scope_is_accepted() -> None:
    account, stranger = ServiceAccount.generate("p", "ours"), ServiceAccount.generate("p", "not")
    keys = {account.email: account.public_key_pem()}
    assert accepts(_token(account), keys)
    assert not accepts(_token(stranger), keys)
    # Someone else's key claiming to be our account: the signature does not verify.
    assert not accepts(_token(stranger, iss=account.email, sub=account.email), keys)
    assert not accepts(_token(account, exp=int(time.time()) - 1), keys)
    assert not accepts(_token(account, scope="https://www.googleapis.com/auth/devstorage"), keys)
    assert not accepts(None, keys)
    assert not accepts("Bearer not-a-jwt", keys)

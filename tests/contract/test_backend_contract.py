"""The contract every KMS backend keeps, run against each real server or emulator."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from keyledger.errors import ProviderAccessDenied, ProviderError, ProviderUnavailable
from keyledger.providers.base import KeyVersionRequest, KmsKeyState
from tests.contract.target import ContractTarget


def _request(
    version: int = 1, marker: str | None = None, key_name: str | None = None
) -> KeyVersionRequest:
    return KeyVersionRequest(
        tenant="contract",
        key_name=key_name or f"k{uuid.uuid4().hex[:10]}",
        version=version,
        algorithm="AES-256-GCM",
        marker=marker or f"{uuid.uuid4()}.v{version}",
        labels={"tenant": "contract", "version": str(version)},
    )


def test_check_passes(target: ContractTarget) -> None:
    target.backend.check()


def test_create_describe_and_find(target: ContractTarget) -> None:
    request = _request()
    created = target.backend.create_key_version(request)
    assert created.state is KmsKeyState.ENABLED
    assert target.backend.describe(created.ref) == created
    assert target.backend.find_key_version(request.marker) == created
    assert target.backend.find_key_version(f"{uuid.uuid4()}.v1") is None


def test_create_is_idempotent_after_a_crash(target: ContractTarget) -> None:
    """A retry with the same marker (the crash-recovery path) never makes a second key."""
    request = _request()
    first = target.backend.create_key_version(request)
    again = target.backend.create_key_version(request)
    assert again.ref == first.ref


def test_rotate_and_roll_back(target: ContractTarget) -> None:
    v1_request = _request(1)
    v1 = target.backend.create_key_version(v1_request)
    target.backend.make_primary(v1.ref, v1_request)
    wrapped_by = {v1.ref: target.backend.generate_data_key(v1.ref)}
    v2_request = _request(2, key_name=v1_request.key_name)
    v2 = target.backend.create_key_version(v2_request)
    assert v2.ref != v1.ref
    target.backend.make_primary(v2.ref, v2_request)
    wrapped_by[v2.ref] = target.backend.generate_data_key(v2.ref)
    if target.primary_ref is not None:
        assert target.primary_ref(v2.ref) == v2.ref
    target.backend.make_primary(v1.ref, v1_request)  # rollback
    if target.primary_ref is not None:
        assert target.primary_ref(v1.ref) == v1.ref
    # Both versions stay usable for decrypting what each wrapped while it was primary.
    for ref, data_key in wrapped_by.items():
        assert target.backend.unwrap_data_key(ref, data_key.wrapped) == data_key.plaintext


def test_data_key_round_trip_and_isolation(target: ContractTarget) -> None:
    one = target.backend.create_key_version(_request()).ref
    other = target.backend.create_key_version(_request()).ref
    data_key = target.backend.generate_data_key(one)
    assert len(data_key.plaintext) == 32
    assert data_key.plaintext not in data_key.wrapped
    assert data_key.plaintext.hex() not in repr(data_key)
    assert target.backend.unwrap_data_key(one, data_key.wrapped) == data_key.plaintext
    with pytest.raises(ProviderError):
        target.backend.unwrap_data_key(other, data_key.wrapped)


def test_disable_refuses_crypto_and_enable_restores_it(target: ContractTarget) -> None:
    ref = target.backend.create_key_version(_request()).ref
    wrapped = target.backend.generate_data_key(ref).wrapped
    target.backend.disable(ref)
    assert target.backend.describe(ref).state is KmsKeyState.DISABLED
    with pytest.raises(ProviderError):
        target.backend.generate_data_key(ref)
    with pytest.raises(ProviderError):
        target.backend.unwrap_data_key(ref, wrapped)
    target.backend.enable(ref)
    assert target.backend.describe(ref).state is KmsKeyState.ENABLED
    assert len(target.backend.unwrap_data_key(ref, wrapped)) == 32


def test_schedule_deletion(target: ContractTarget) -> None:
    ref = target.backend.create_key_version(_request()).ref
    when = target.backend.schedule_deletion(ref, 7)
    expected = datetime.now(UTC) + timedelta(days=7)
    assert abs(when - expected) < timedelta(days=1)
    described = target.backend.describe(ref)
    assert described.state is KmsKeyState.PENDING_DELETION
    with pytest.raises(ProviderError):
        target.backend.generate_data_key(ref)


def test_destroy_due_destroys_only_what_is_due(target: ContractTarget) -> None:
    backend = target.backend
    # The older of two versions: the one every backend can destroy (transit trims only the oldest).
    doomed_request = _request(1)
    doomed = backend.create_key_version(doomed_request).ref
    kept = backend.create_key_version(_request(2, key_name=doomed_request.key_name)).ref
    backend.schedule_deletion(doomed, 7)
    before = {ref: backend.describe(ref) for ref in (kept, doomed)}
    now = datetime.now(UTC)

    assert backend.destroy_due(now) == []
    assert {ref: backend.describe(ref) for ref in (kept, doomed)} == before

    later = now + timedelta(days=8)
    if target.keeps_deletion_schedule:
        assert doomed in backend.destroy_due(later)
        assert backend.describe(doomed).state is KmsKeyState.MISSING
    else:  # the KMS destroys on its own schedule: nothing for keyledger to do
        assert backend.destroy_due(later) == []
        assert backend.describe(doomed).state is KmsKeyState.PENDING_DELETION
    assert doomed not in backend.destroy_due(later)  # nothing is destroyed twice
    assert backend.describe(kept) == before[kept]
    data_key = backend.generate_data_key(kept)
    assert backend.unwrap_data_key(kept, data_key.wrapped) == data_key.plaintext


@pytest.mark.needs("with_wrong_credentials")
def test_wrong_credentials_are_access_denied_without_the_secret(target: ContractTarget) -> None:
    assert target.with_wrong_credentials is not None
    backend = target.with_wrong_credentials()
    with pytest.raises(ProviderAccessDenied) as raised:
        backend.check()
    for secret in target.wrong_secrets:
        assert secret not in str(raised.value)
        assert secret not in repr(raised.value.args)


@pytest.mark.needs("unreachable")
def test_unreachable_endpoint_is_unavailable(target: ContractTarget) -> None:
    assert target.unreachable is not None
    with pytest.raises(ProviderUnavailable):
        target.unreachable().check()

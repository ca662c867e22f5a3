"""Cloud KMS specifics the generic contract cannot see, against keyledger's own test server,
through the backend's `insecure` option (plaintext, no credentials; the contract
suite and the e2e tests use TLS and a service account).

Crash recovery between the three steps of creating a version (claim, create,
record), and what GCP's version state machine refuses: a disabled primary, a
destroy-scheduled version enabled again, a deletion window longer than the
CryptoKey's destroy_scheduled_duration.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import kms_v1

from keyledger.errors import KEY_DISABLED, KEY_PENDING_DELETION, InvalidSpec, ProviderError
from keyledger.providers.base import KeyBackend, KeyVersionRequest
from keyledger.providers.gcp.names import PENDING_AFTER_LABEL, PENDING_LABEL, marker_label
from tests.contract.backends.gcp import insecure_gcp_backend
from tests.harness.gcp_kms import GcpKmsServer, gcp_kms


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcpKmsServer]:
    with gcp_kms(tmp_path_factory.mktemp("gcp") / "server.log") as started:
        yield started


@pytest.fixture(scope="module")
def backend(server: GcpKmsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyBackend]:
    opened = insecure_gcp_backend(server, Path(tmp_path_factory.mktemp("gcp-backend")))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def sdk(server: GcpKmsServer) -> kms_v1.KeyManagementServiceClient:
    return server.client()


def _request(version: int, key_name: str) -> KeyVersionRequest:
    return KeyVersionRequest(
        tenant="gcp-specifics",
        key_name=key_name,
        version=version,
        algorithm="AES-256-GCM",
        marker=f"{uuid.uuid4()}.v{version}",
    )


def _version_names(sdk: kms_v1.KeyManagementServiceClient, ref: str) -> list[str]:
    crypto_key = ref.rpartition("/cryptoKeyVersions/")[0]
    return [v.name for v in sdk.list_crypto_key_versions(request={"parent": crypto_key})]


def _claim(sdk: kms_v1.KeyManagementServiceClient, ref: str, marker: str, after: int) -> None:
    """What step 1 of a creation leaves in the CryptoKey's labels."""
    crypto_key = ref.rpartition("/cryptoKeyVersions/")[0]
    labels = dict(sdk.get_crypto_key(request={"name": crypto_key}).labels)
    labels |= {PENDING_LABEL: marker_label(marker), PENDING_AFTER_LABEL: str(after)}
    sdk.update_crypto_key(
        request={
            "crypto_key": {"name": crypto_key, "labels": labels},
            "update_mask": {"paths": ["labels"]},
        }
    )


def test_a_crash_after_the_claim_makes_the_version_once(
    backend: KeyBackend, sdk: kms_v1.KeyManagementServiceClient
) -> None:
    key_name = f"k{uuid.uuid4().hex[:8]}"
    v1 = backend.create_key_version(_request(1, key_name)).ref
    v2_request = _request(2, key_name)
    _claim(sdk, v1, v2_request.marker, after=1)  # ...and the process died

    v2 = backend.create_key_version(v2_request).ref
    assert _version_names(sdk, v1) == [v1, v2]
    assert backend.create_key_version(v2_request).ref == v2


def test_a_crash_after_creating_adopts_the_unrecorded_version(
    backend: KeyBackend, sdk: kms_v1.KeyManagementServiceClient
) -> None:
    key_name = f"k{uuid.uuid4().hex[:8]}"
    v1 = backend.create_key_version(_request(1, key_name)).ref
    v2_request = _request(2, key_name)
    _claim(sdk, v1, v2_request.marker, after=1)
    made = sdk.create_crypto_key_version(
        request={"parent": v1.rpartition("/cryptoKeyVersions/")[0], "crypto_key_version": {}}
    ).name  # ...and the process died before recording it

    assert backend.create_key_version(v2_request).ref == made
    assert backend.find_key_version(v2_request.marker) == backend.describe(made)
    assert _version_names(sdk, v1) == [v1, made]


def test_a_disabled_version_cannot_become_primary(backend: KeyBackend) -> None:
    request = _request(1, f"k{uuid.uuid4().hex[:8]}")
    ref = backend.create_key_version(request).ref
    backend.disable(ref)
    with pytest.raises(ProviderError) as refused:
        backend.make_primary(ref, request)
    assert refused.value.reason == KEY_DISABLED
    assert "FAILED_PRECONDITION" in str(refused.value)


def test_a_destroy_scheduled_version_is_not_enabled_again(backend: KeyBackend) -> None:
    ref = backend.create_key_version(_request(1, f"k{uuid.uuid4().hex[:8]}")).ref
    backend.schedule_deletion(ref, 7)
    with pytest.raises(ProviderError) as refused:
        backend.enable(ref)
    assert refused.value.reason == KEY_PENDING_DELETION
    backend.disable(ref)  # nothing to do: it already refuses cryptographic use


def test_a_window_longer_than_the_crypto_keys_is_refused_by_field(backend: KeyBackend) -> None:
    ref = backend.create_key_version(_request(1, f"k{uuid.uuid4().hex[:8]}")).ref
    with pytest.raises(InvalidSpec, match=r"spec\.deletionWindowDays is 30.* at most 7"):
        backend.schedule_deletion(ref, 30)

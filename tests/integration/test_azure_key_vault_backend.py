"""Key Vault specifics the generic contract cannot see, against keyledger's own test server.

Soft delete done behind keyledger's back (the name stays taken until recovered
or purged), validity dates set outside keyledger, a damaged wrapped data key, a
service principal the directory does not know, and listings past the first page.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.keyvault.keys import KeyClient

from keyledger.errors import (
    DATA_KEY_NOT_WRAPPED_BY_KEY,
    KEY_DISABLED,
    ProviderAccessDenied,
    ProviderError,
)
from keyledger.providers.azure.errors import KEY_NAME_DELETED
from keyledger.providers.azure.names import KEY_PREFIX, KeyVersionId
from keyledger.providers.base import KeyBackend, KeyVersionRequest, KmsKeyState
from tests.contract.backends.azure import azure_backend
from tests.harness.azure_kv import AzureKeyVaultServer, azure_key_vault


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureKeyVaultServer]:
    with azure_key_vault(Path(tmp_path_factory.mktemp("azure"))) as started:
        yield started


@pytest.fixture(scope="module")
def backend(
    server: AzureKeyVaultServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KeyBackend]:
    opened = azure_backend(server, Path(tmp_path_factory.mktemp("azure-backend")))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def sdk(server: AzureKeyVaultServer) -> KeyClient:
    return server.key_client()


def _request(version: int, key_name: str) -> KeyVersionRequest:
    return KeyVersionRequest(
        tenant="azure-specifics",
        key_name=key_name,
        version=version,
        algorithm="AES-256-GCM",
        marker=f"{uuid.uuid4()}.v{version}",
    )


def _parts(server: AzureKeyVaultServer, ref: str) -> KeyVersionId:
    return KeyVersionId.parse(ref, server.url)


def test_a_key_deleted_behind_keyledgers_back_is_missing_and_its_name_taken(
    backend: KeyBackend, sdk: KeyClient, server: AzureKeyVaultServer
) -> None:
    key_name = f"k{uuid.uuid4().hex[:8]}"
    ref = backend.create_key_version(_request(1, key_name)).ref
    name = _parts(server, ref).name
    sdk.begin_delete_key(name).wait()

    assert backend.describe(ref).state is KmsKeyState.MISSING
    with pytest.raises(ProviderError) as refused:
        backend.create_key_version(_request(2, key_name))
    assert refused.value.reason == KEY_NAME_DELETED
    assert "recover" in str(refused.value)

    sdk.begin_recover_deleted_key(name).wait()
    assert backend.describe(ref).state is KmsKeyState.ENABLED
    assert backend.create_key_version(_request(2, key_name)).ref != ref


def test_a_version_past_its_expiry_date_is_disabled_for_keyledger(
    backend: KeyBackend, sdk: KeyClient, server: AzureKeyVaultServer
) -> None:
    ref = backend.create_key_version(_request(1, f"k{uuid.uuid4().hex[:8]}")).ref
    target = _parts(server, ref)
    sdk.update_key_properties(
        target.name, target.version, expires_on=datetime.now(UTC) - timedelta(minutes=1)
    )
    assert backend.describe(ref).state is KmsKeyState.DISABLED
    with pytest.raises(ProviderError) as refused:
        backend.generate_data_key(ref)
    assert refused.value.reason == KEY_DISABLED


def test_a_damaged_data_key_is_not_wrapped_by_the_version(backend: KeyBackend) -> None:
    ref = backend.create_key_version(_request(1, f"k{uuid.uuid4().hex[:8]}")).ref
    wrapped = bytearray(backend.generate_data_key(ref).wrapped)
    wrapped[10] ^= 0xFF
    with pytest.raises(ProviderError) as refused:
        backend.unwrap_data_key(ref, bytes(wrapped))
    assert refused.value.reason == DATA_KEY_NOT_WRAPPED_BY_KEY


def test_an_unknown_service_principal_is_access_denied(
    server: AzureKeyVaultServer, tmp_path: Path
) -> None:
    stranger = azure_backend(
        server, tmp_path, credentials={**server.credentials(), "clientId": str(uuid.uuid4())}
    )
    with pytest.raises(ProviderAccessDenied, match="AADSTS700016"):
        stranger.check()
    stranger.close()


def test_a_marker_is_found_past_the_first_page_of_keys(
    backend: KeyBackend, sdk: KeyClient, server: AzureKeyVaultServer
) -> None:
    # Key Vault lists 25 keys a page, by name; the SDK follows nextLink for the rest.
    for _ in range(26):
        sdk.create_rsa_key(f"{KEY_PREFIX}aaa-{uuid.uuid4().hex[:12]}", size=2048)
    request = _request(1, f"k{uuid.uuid4().hex[:8]}")
    made = backend.create_key_version(request)
    names = [p.name for p in sdk.list_properties_of_keys()]
    assert names.index(_parts(server, made.ref).name) >= 25  # not on the first page
    assert backend.find_key_version(request.marker) == made

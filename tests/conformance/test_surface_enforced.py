"""The servers hold to the surface the conformance check compares: a request field
outside `surface.FIELDS`, a body field or route outside the Key Vault tables, is
refused rather than silently ignored, so that what keyledger relies on is always
what was checked against the published definitions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from google.api_core import exceptions as api

from tests.harness.azure_kv import AzureKeyVaultServer, azure_key_vault
from tests.harness.gcp_kms import GcpKmsServer, gcp_kms


@pytest.fixture(scope="module")
def gcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcpKmsServer]:
    with gcp_kms(tmp_path_factory.mktemp("gcp") / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureKeyVaultServer]:
    with azure_key_vault(Path(tmp_path_factory.mktemp("azure"))) as server:
        yield server


def test_the_cloud_kms_server_refuses_a_field_it_does_not_implement(gcp: GcpKmsServer) -> None:
    client = gcp.client()
    client.create_key_ring(
        request={"parent": gcp.location_name, "key_ring_id": "surface", "key_ring": {}}
    )
    with pytest.raises(api.MethodNotImplemented, match="skip_initial_version_creation"):
        client.create_crypto_key(
            request={
                "parent": f"{gcp.location_name}/keyRings/surface",
                "crypto_key_id": "no-versions",
                "crypto_key": {"purpose": "ENCRYPT_DECRYPT"},
                "skip_initial_version_creation": True,
            }
        )


def test_the_key_vault_server_refuses_a_body_field_or_route_it_does_not_implement(
    azure: AzureKeyVaultServer,
) -> None:
    client = azure.key_client()
    with pytest.raises(HttpResponseError, match="public_exponent") as refused:
        client.create_rsa_key("surface", size=2048, public_exponent=3)
    assert refused.value.status_code == 400
    with pytest.raises(HttpResponseError) as missing:
        client.get_random_bytes(16)
    assert missing.value.status_code == 404

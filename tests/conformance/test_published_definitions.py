"""The test servers against the published definitions: the Cloud KMS server's methods,
fields and enum values against the google.cloud.kms.v1 .proto files, the Key Vault
server's routes against azure-keyvault-keys' generated request builders."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2  # type: ignore[import-untyped]

from tests.conformance.azure_routes import route_problems, sdk_requests
from tests.conformance.gcp_proto import (
    PUBLISHED_PROTOS,
    compile_published,
    pool_of,
    surface_problems,
)
from tests.harness.azure_kv.routes import API_VERSION, ROUTES
from tests.harness.gcp_kms.surface import ENUM_VALUES, FIELDS, METHODS, SERVICE


def test_the_cloud_kms_server_uses_only_the_published_api(tmp_path: Path) -> None:
    compiled = compile_published(PUBLISHED_PROTOS, tmp_path / "kms.desc")
    published = pool_of(descriptor_pb2.FileDescriptorSet.FromString(compiled))
    assert surface_problems(published, SERVICE, METHODS, FIELDS, ENUM_VALUES) == []


def test_the_key_vault_server_uses_only_the_published_routes() -> None:
    assert route_problems(ROUTES, API_VERSION, sdk_requests()) == []

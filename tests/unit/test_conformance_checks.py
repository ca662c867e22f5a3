"""The conformance checks catch what they exist for: a method, field, enum value or route
that the test servers use and the published definition lacks.

The GCP "published" definitions here are the SDK's own message descriptors plus the
service the server declares (the SDK's proto-plus types carry no service), with one
method, field or enum value taken out or retyped; the Azure ones are the SDK's
generated request builders, against routes made up for the test.
"""

from __future__ import annotations

from typing import Any

import proto  # type: ignore[import-untyped]
from google.cloud import kms_v1
from google.protobuf import descriptor_pb2  # type: ignore[import-untyped]

from tests.conformance.azure_routes import route_problems, sdk_requests
from tests.conformance.gcp_proto import pool_of, surface_problems
from tests.harness.azure_kv.routes import API_VERSION, ROUTES, Route
from tests.harness.gcp_kms.surface import ENUM_VALUES, FIELDS, METHODS, SERVICE


def _sdk_file_set() -> descriptor_pb2.FileDescriptorSet:
    """The SDK's google.cloud.kms.v1 files and their imports, in dependency order."""
    files: list[Any] = []

    def visit(file: Any) -> None:
        if file.name in {f.name for f in files}:
            return
        for dependency in file.dependencies:
            visit(dependency)
        files.append(file)

    for request, response in METHODS.values():
        visit(request.pb().DESCRIPTOR.file)
        visit(response.pb().DESCRIPTOR.file)
    file_set = descriptor_pb2.FileDescriptorSet()
    for file in files:
        file.CopyToProto(file_set.file.add())
    service_file = file_set.file.add(
        name="test/kms_service.proto", package="google.cloud.kms.v1", syntax="proto3"
    )
    service_file.dependency.extend(sorted({f.name for f in files}))
    service = service_file.service.add(name=SERVICE.rpartition(".")[2])
    for name, (request, response) in METHODS.items():
        service.method.add(
            name=name,
            input_type=f".{request.pb().DESCRIPTOR.full_name}",
            output_type=f".{response.pb().DESCRIPTOR.full_name}",
        )
    return file_set


def _published_without(
    method: str | None = None,
    field: str | None = None,
    enum_value: str | None = None,
    retyped: str | None = None,
) -> Any:
    """A pool of the SDK's definitions lacking `method` (of the service), `field` and
    `enum_value` (of CryptoKeyVersion and its state enum), with CryptoKeyVersion's
    field `retyped` a string."""
    file_set = _sdk_file_set()
    for file in file_set.file:
        for service in file.service:
            kept = [m for m in service.method if m.name != method]
            del service.method[:]
            service.method.extend(kept)
        for message in file.message_type:
            if message.name != "CryptoKeyVersion":
                continue
            fields = [f for f in message.field if f.name != field]
            del message.field[:]
            message.field.extend(fields)
            for candidate in message.field:
                if candidate.name == retyped:
                    candidate.type = candidate.TYPE_STRING
                    candidate.ClearField("type_name")
            for enum in message.enum_type:
                values = [v for v in enum.value if v.name != enum_value]
                del enum.value[:]
                enum.value.extend(values)
    return pool_of(file_set)


def test_the_gcp_check_passes_on_the_definitions_the_server_speaks() -> None:
    assert surface_problems(_published_without(), SERVICE, METHODS, FIELDS, ENUM_VALUES) == []


def test_the_gcp_check_names_a_method_the_published_api_lacks() -> None:
    published = _published_without(method="Decrypt")
    assert surface_problems(published, SERVICE, METHODS, FIELDS, ENUM_VALUES) == [
        "method google.cloud.kms.v1.KeyManagementService.Decrypt is not published"
    ]
    invented: dict[str, tuple[type[proto.Message], type[proto.Message]]] = {
        **METHODS,
        "RewrapCryptoKey": (kms_v1.EncryptRequest, kms_v1.EncryptResponse),
    }
    assert surface_problems(_published_without(), SERVICE, invented, FIELDS, ENUM_VALUES) == [
        "method google.cloud.kms.v1.KeyManagementService.RewrapCryptoKey is not published"
    ]


def test_the_gcp_check_names_a_field_and_an_enum_value_the_published_api_lacks() -> None:
    published = _published_without(field="destroy_event_time", enum_value="DESTROYED")
    assert surface_problems(published, SERVICE, METHODS, FIELDS, ENUM_VALUES) == [
        "field google.cloud.kms.v1.CryptoKeyVersion.destroy_event_time is not published",
        "enum value google.cloud.kms.v1.CryptoKeyVersion.CryptoKeyVersionState.DESTROYED "
        "is not published",
    ]


def test_the_gcp_check_names_a_field_of_another_type() -> None:
    published = _published_without(retyped="destroy_time")
    (problem,) = surface_problems(published, SERVICE, METHODS, FIELDS, ENUM_VALUES)
    assert problem.startswith(
        "field google.cloud.kms.v1.CryptoKeyVersion.destroy_time is (5, 9, False, '') in the "
        "published API, (5, 11, False, 'google.protobuf.Timestamp') in the SDK"
    )


def test_the_azure_check_passes_on_the_server_routes() -> None:
    assert route_problems(ROUTES, API_VERSION, sdk_requests()) == []


def test_the_azure_check_names_a_route_no_builder_makes() -> None:
    invented = (
        *ROUTES,
        Route("rewrap_key", "POST", "/keys/{key-name}/{key-version}/rewrapkey"),
        Route("patch_deleted_key", "PATCH", "/deletedkeys/{key-name}"),
    )
    assert route_problems(invented, API_VERSION, sdk_requests()) == [
        "route rewrap_key (POST /keys/{key-name}/{key-version}/rewrapkey) is built by no "
        "build_key_vault_*_request",
        "route patch_deleted_key (PATCH /deletedkeys/{key-name}) is built by no "
        "build_key_vault_*_request",
    ]


def test_the_azure_check_names_a_query_parameter_and_api_version_the_sdk_does_not_send() -> None:
    filtered = Route("list_keys", "GET", "/keys", frozenset({"api-version", "$filter"}))
    assert route_problems((filtered,), "7.4", sdk_requests()) == [
        "the server accepts api-version 7.4, the SDK sends {'2025-07-01'}",
        "route list_keys reads query parameters ['$filter'] that "
        "build_key_vault_get_keys_request does not send",
    ]

"""Is the Cloud KMS test server's surface in the published google.cloud.kms.v1 API?

The published `.proto` files (npm `google-proto-files`, installed by
hack/install-deps.sh into .cache/api-definitions) are compiled with grpcio-tools
in a separate process into a descriptor set. `surface_problems` then compares
what the server declares it uses (`tests.harness.gcp_kms.surface`, enforced by
the server at run time) with that definition: every method with the same
request and response types, every field with the same number, type and
cardinality as the SDK's messages the server speaks, every enum value with the
same number. Anything used and not published is a problem.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import proto  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2, descriptor_pool  # type: ignore[import-untyped]

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLISHED_PROTOS = REPO_ROOT / ".cache/api-definitions/node_modules/google-proto-files"
KMS_PROTOS = ("google/cloud/kms/v1/service.proto", "google/cloud/kms/v1/resources.proto")


def compile_published(proto_root: Path, out: Path) -> bytes:
    """The FileDescriptorSet of the KMS protos under `proto_root`, imports included."""
    missing = [p for p in KMS_PROTOS if not (proto_root / p).is_file()]
    if missing:
        raise AssertionError(
            f"the published Cloud KMS protos are not installed ({proto_root / missing[0]} is "
            "missing): run `bash hack/install-deps.sh apis` (make test does)"
        )
    # grpc_tools.protoc run as a module adds its bundled google/protobuf/*.proto itself.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_root}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *KMS_PROTOS,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.read_bytes()


def pool_of(file_set: descriptor_pb2.FileDescriptorSet) -> Any:
    """A descriptor pool holding `file_set` (files in dependency order)."""
    pool = descriptor_pool.DescriptorPool()
    for file in file_set.file:
        pool.Add(file)
    return pool


def surface_problems(
    published: Any,
    service: str,
    methods: Mapping[str, tuple[type[proto.Message], type[proto.Message]]],
    fields: Mapping[str, frozenset[str]],
    enum_values: Mapping[str, frozenset[str]],
) -> list[str]:
    """What the surface uses that `published` (a DescriptorPool) lacks or types differently."""
    problems: list[str] = []
    try:
        published_service = published.FindServiceByName(service)
    except KeyError:
        return [f"service {service} is not published"]
    for name, (request, response) in sorted(methods.items()):
        method = published_service.methods_by_name.get(name)
        if method is None:
            problems.append(f"method {service}.{name} is not published")
            continue
        for role, ours, theirs in (
            ("request", request, method.input_type),
            ("response", response, method.output_type),
        ):
            if _descriptor(ours).full_name != theirs.full_name:
                problems.append(
                    f"method {name}: {role} is {theirs.full_name} in the published API, "
                    f"{_descriptor(ours).full_name} in the server"
                )
        if method.client_streaming or method.server_streaming:
            problems.append(f"method {name} streams in the published API; the server's is unary")
    sdk = descriptor_pool.Default()
    for message_name, names in sorted(fields.items()):
        try:
            message = published.FindMessageTypeByName(message_name)
        except KeyError:
            problems.append(f"message {message_name} is not published")
            continue
        spoken = sdk.FindMessageTypeByName(message_name)
        for field_name in sorted(names):
            theirs = message.fields_by_name.get(field_name)
            if theirs is None:
                problems.append(f"field {message_name}.{field_name} is not published")
                continue
            mine = spoken.fields_by_name.get(field_name)
            if mine is None or _shape(mine) != _shape(theirs):
                problems.append(
                    f"field {message_name}.{field_name} is {_shape(theirs)} in the published "
                    f"API, {None if mine is None else _shape(mine)} in the SDK the server speaks"
                )
    for enum_name, values in sorted(enum_values.items()):
        try:
            enum = published.FindEnumTypeByName(enum_name)
        except KeyError:
            problems.append(f"enum {enum_name} is not published")
            continue
        ours_enum = sdk.FindEnumTypeByName(enum_name)
        for value in sorted(values):
            theirs_value = enum.values_by_name.get(value)
            if theirs_value is None:
                problems.append(f"enum value {enum_name}.{value} is not published")
            elif ours_enum.values_by_name[value].number != theirs_value.number:
                problems.append(f"enum value {enum_name}.{value} has another number")
    return problems


def _descriptor(message: type[proto.Message]) -> Any:
    return message.pb().DESCRIPTOR


def _shape(field: Any) -> tuple[int, int, bool, str]:
    """Number, wire type, repeated, and the message or enum type it names."""
    named = field.message_type or field.enum_type
    return (field.number, field.type, field.is_repeated, named.full_name if named else "")

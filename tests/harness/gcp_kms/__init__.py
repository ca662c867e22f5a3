"""A Cloud KMS of our own for the tests: a gRPC server speaking google.cloud.kms.v1
with the SDK's own message types (`service`), over the rules in `keys`, limited to
`surface`. It runs as a child process (`python -m tests.harness.gcp_kms`) on an
insecure channel: the backend's `insecure` option, which takes no credentials.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc  # type: ignore[import-untyped]
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcTransport,
)

from tests.harness.child import start_child, stop_child

PROJECT = "keyledger-tests"
LOCATION = "europe-west1"


@dataclasses.dataclass(frozen=True)
class GcpKmsServer:
    endpoint: str  # host:port
    project: str
    location: str
    process: subprocess.Popen[str] = dataclasses.field(repr=False, compare=False)

    @property
    def location_name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def client(self) -> kms_v1.KeyManagementServiceClient:
        """A plain SDK client, for looking (and changing things) behind the backend's back."""
        transport = KeyManagementServiceGrpcTransport(channel=grpc.insecure_channel(self.endpoint))
        return kms_v1.KeyManagementServiceClient(transport=transport)


def start_gcp_kms(log_file: Path) -> GcpKmsServer:
    process, port = start_child("tests.harness.gcp_kms", log_file)
    return GcpKmsServer(f"127.0.0.1:{port}", PROJECT, LOCATION, process)


def stop_gcp_kms(server: GcpKmsServer) -> None:
    stop_child(server.process)


@contextmanager
def gcp_kms(log_file: Path) -> Iterator[GcpKmsServer]:
    server = start_gcp_kms(log_file)
    try:
        yield server
    finally:
        stop_gcp_kms(server)

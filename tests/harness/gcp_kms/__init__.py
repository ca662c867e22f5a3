"""A Cloud KMS of our own for the tests: a gRPC server speaking google.cloud.kms.v1
with the SDK's own message types (`service`), over the rules in `keys`, limited to
`surface`. It runs as a child process (`python -m tests.harness.gcp_kms`) with two
ports over one store: plaintext without credentials (the backend's `insecure`
option, and the tests' own view), and TLS taking only the self-signed JWTs of
the service account it was started with (`auth`), as Cloud KMS does. Its
certificate is the one gRPC trusts in this process (`tls.grpc_trusted_certificate`).
"""

from __future__ import annotations

import dataclasses
import json
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
from tests.harness.gcp_kms.auth import ServiceAccount
from tests.harness.tls import grpc_trusted_certificate

PROJECT = "keyledger-tests"
LOCATION = "europe-west1"


@dataclasses.dataclass(frozen=True)
class GcpKmsServer:
    endpoint: str  # host:port, plaintext
    tls_endpoint: str  # host:port, TLS with service-account tokens
    project: str
    location: str
    service_account: ServiceAccount = dataclasses.field(repr=False)
    process: subprocess.Popen[str] = dataclasses.field(repr=False, compare=False)

    @property
    def location_name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def service_account_json(self) -> str:
        """The key file of the account the TLS port accepts (a secret)."""
        return self.service_account.key_file(self.project)

    def client(self) -> kms_v1.KeyManagementServiceClient:
        """A plain SDK client, for looking (and changing things) behind the backend's back."""
        transport = KeyManagementServiceGrpcTransport(channel=grpc.insecure_channel(self.endpoint))
        return kms_v1.KeyManagementServiceClient(transport=transport)


def start_gcp_kms(log_file: Path) -> GcpKmsServer:
    cert_file, key_file = grpc_trusted_certificate()
    account = ServiceAccount.generate(PROJECT, "keyledger-operator")
    accounts_file = log_file.with_suffix(".accounts.json")
    accounts_file.write_text(json.dumps({account.email: account.public_key_pem()}))
    process, (port, tls_port) = start_child(
        "tests.harness.gcp_kms", log_file, (str(cert_file), str(key_file), str(accounts_file))
    )
    return GcpKmsServer(
        f"127.0.0.1:{port}", f"127.0.0.1:{tls_port}", PROJECT, LOCATION, account, process
    )


def stop_gcp_kms(server: GcpKmsServer) -> None:
    stop_child(server.process)


@contextmanager
def gcp_kms(log_file: Path) -> Iterator[GcpKmsServer]:
    server = start_gcp_kms(log_file)
    try:
        yield server
    finally:
        stop_gcp_kms(server)

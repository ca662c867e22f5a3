"""GCP Cloud KMS: keyledger's own gRPC test server (tests/harness/gcp_kms), reached by the
real google-cloud-kms client over TLS with a service-account key file, as in production."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from keyledger.providers.base import BackendConfig, KeyBackend
from keyledger.providers.registry import open_backend
from keyledger.settings import Settings
from tests.contract.target import ContractTarget
from tests.harness.gcp_kms import GcpKmsServer, gcp_kms
from tests.harness.gcp_kms.auth import ServiceAccount
from tests.harness.net import free_port

NAME = "gcpKms"
CAPABILITIES = ("with_wrong_credentials", "unreachable", "primary_ref")
SERVICE_ACCOUNT_KEY = "serviceAccountJson"


def gcp_options(server: GcpKmsServer, endpoint: str | None = None) -> Mapping[str, object]:
    """The provider's spec.gcpKms section for the server's TLS endpoint."""
    return {
        "project": server.project,
        "location": server.location,
        "endpoint": endpoint or server.tls_endpoint,
        # The contract schedules deletions 7 days out; GCP destroys after the CryptoKey's
        # destroy_scheduled_duration, whatever the window, so the two agree here.
        "destroyScheduledDays": 7,
    }


def gcp_backend(
    server: GcpKmsServer,
    workdir: Path,
    *,
    endpoint: str | None = None,
    key_file: str | None = None,
) -> KeyBackend:
    """The backend as the registry opens it, with the server's service account (or `key_file`)."""
    credentials = {SERVICE_ACCOUNT_KEY: key_file or server.service_account_json()}
    config = BackendConfig("contract-gcp", "gcpKms", gcp_options(server, endpoint), credentials)
    return open_backend(config, Settings(data_dir=workdir))


def insecure_gcp_backend(server: GcpKmsServer, workdir: Path) -> KeyBackend:
    """The backend on the plaintext endpoint, without credentials (spec.gcpKms.insecure)."""
    options = {**gcp_options(server, server.endpoint), "insecure": True}
    return open_backend(
        BackendConfig("insecure-gcp", "gcpKms", options), Settings(data_dir=workdir)
    )


@contextmanager
def open_target(workdir: Path) -> Iterator[ContractTarget]:
    with gcp_kms(workdir / "gcp-kms.log") as server:
        backend = gcp_backend(server, workdir)
        view = server.client()
        # A well-formed key file of an account the server does not know.
        stranger = ServiceAccount.generate(server.project, "stranger")
        stranger_key_file = stranger.key_file(server.project)

        def primary_ref(ref: str) -> str:
            crypto_key = ref.rpartition("/cryptoKeyVersions/")[0]
            name: str = view.get_crypto_key(request={"name": crypto_key}).primary.name
            return name

        try:
            yield ContractTarget(
                backend=backend,
                with_wrong_credentials=lambda: gcp_backend(
                    server, workdir, key_file=stranger_key_file
                ),
                wrong_secrets=(
                    stranger_key_file,
                    json.loads(stranger_key_file)["private_key"],
                    stranger.key_id,
                ),
                unreachable=lambda: gcp_backend(
                    server, workdir, endpoint=f"127.0.0.1:{free_port()}"
                ),
                primary_ref=primary_ref,
            )
        finally:
            backend.close()
            view.transport.close()  # type: ignore[no-untyped-call]

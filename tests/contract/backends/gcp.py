"""GCP Cloud KMS: keyledger's own gRPC test server (tests/harness/gcp_kms), reached by
the real google-cloud-kms client over the backend's `insecure` channel."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from keyledger.providers.base import BackendConfig, KeyBackend
from keyledger.providers.registry import open_backend
from keyledger.settings import Settings
from tests.contract.target import ContractTarget
from tests.harness.gcp_kms import GcpKmsServer, gcp_kms
from tests.harness.net import free_port

NAME = "gcpKms"
CAPABILITIES = ("unreachable", "primary_ref")


def gcp_options(server: GcpKmsServer, endpoint: str | None = None) -> Mapping[str, object]:
    """The provider's spec.gcpKms section for the test server."""
    return {
        "project": server.project,
        "location": server.location,
        "endpoint": endpoint or server.endpoint,
        "insecure": True,
        # The contract schedules deletions 7 days out; GCP destroys after the CryptoKey's
        # destroy_scheduled_duration, whatever the window, so the two agree here.
        "destroyScheduledDays": 7,
    }


def gcp_backend(server: GcpKmsServer, workdir: Path, endpoint: str | None = None) -> KeyBackend:
    # Through the registry, so that spec parsing is exercised too.
    config = BackendConfig("contract-gcp", "gcpKms", gcp_options(server, endpoint))
    return open_backend(config, Settings(data_dir=workdir))


@contextmanager
def open_target(workdir: Path) -> Iterator[ContractTarget]:
    with gcp_kms(workdir / "gcp-kms.log") as server:
        backend = gcp_backend(server, workdir)
        view = server.client()

        def primary_ref(ref: str) -> str:
            crypto_key = ref.rpartition("/cryptoKeyVersions/")[0]
            name: str = view.get_crypto_key(request={"name": crypto_key}).primary.name
            return name

        try:
            yield ContractTarget(
                backend=backend,
                unreachable=lambda: gcp_backend(
                    server, workdir, endpoint=f"127.0.0.1:{free_port()}"
                ),
                primary_ref=primary_ref,
            )
        finally:
            backend.close()
            view.transport.close()  # type: ignore[no-untyped-call]

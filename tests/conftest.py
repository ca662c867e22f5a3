import pytest

from tests.harness.tls import grpc_trusted_certificate

pytest_plugins = [
    "tests.fixtures_controlplane",
    "tests.fixtures_postgres",
    "tests.fixtures_operator",
    "tests.fixtures_openbao",
]


def pytest_configure(config: pytest.Config) -> None:
    # Before any test can make a TLS gRPC channel: gRPC fixes its trusted roots then.
    grpc_trusted_certificate()

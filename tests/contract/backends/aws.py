"""AWS KMS: moto's server with IAM authentication on, one IAM user with exactly the
permissions the backend declares (see tests/harness/moto_kms.py)."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keyledger.providers.aws.backend import AwsKmsBackend
from keyledger.providers.aws.names import KEY_NAME_TAG, TENANT_TAG, primary_alias
from keyledger.providers.base import BackendConfig, KeyBackend
from keyledger.providers.registry import open_backend
from keyledger.settings import Settings
from tests.contract.target import ContractTarget
from tests.harness.moto_kms import MotoKms, moto_kms

CAPABILITIES = ("with_wrong_credentials", "unreachable", "primary_ref")


@contextmanager
def open_target(workdir: Path) -> Iterator[ContractTarget]:
    with moto_kms(log_file=workdir / "moto.log") as server:
        # Through the registry, so that spec parsing and credentials handling are exercised.
        backend = open_backend(
            BackendConfig(
                provider_name="contract-aws",
                backend="awsKms",
                options={"region": server.region, "endpoint": server.endpoint},
                credentials={
                    "accessKeyId": server.access_key_id,
                    "secretAccessKey": server.secret_access_key,
                },
            ),
            Settings(data_dir=workdir),
        )
        # The right access key id with a wrong secret: the server rejects the signature.
        wrong_secret = secrets.token_urlsafe(30)

        def with_wrong_credentials() -> KeyBackend:
            return AwsKmsBackend(
                region=server.region,
                endpoint=server.endpoint,
                access_key_id=server.access_key_id,
                secret_access_key=wrong_secret,
            )

        def unreachable() -> KeyBackend:
            return AwsKmsBackend(
                region=server.region,
                endpoint=f"http://127.0.0.1:{_closed_port()}",
                access_key_id=server.access_key_id,
                secret_access_key=server.secret_access_key,
            )

        try:
            yield ContractTarget(
                backend=backend,
                with_wrong_credentials=with_wrong_credentials,
                wrong_secrets=(wrong_secret,),
                unreachable=unreachable,
                primary_ref=lambda ref: _alias_target(server, ref),
                notes=[
                    "moto lets disabled and pending-deletion keys encrypt and decrypt: "
                    "the backend checks the key state itself before crypto calls",
                ],
            )
        finally:
            backend.close()


def _alias_target(server: MotoKms, ref: str) -> str:
    """The ARN the key's primary alias points at, asked of the server directly."""
    kms = server.kms_client()
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=ref)["Tags"]}
    alias = primary_alias(tags[TENANT_TAG], tags[KEY_NAME_TAG])
    arn: str = kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    return arn


def _closed_port() -> int:
    """A loopback port that nothing listens on (bound for a moment, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port

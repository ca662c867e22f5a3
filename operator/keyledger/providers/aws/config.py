"""The `spec.awsKms` section and its credentials Secret, as typed settings.

Credentials: a credentialsRef Secret with `accessKeyId` and `secretAccessKey`
(and optionally `sessionToken`); without credentialsRef boto3's default chain
applies (IRSA, instance profile, AWS_* environment).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keyledger.errors import InvalidSpec
from keyledger.providers.base import BackendConfig


@dataclass(frozen=True)
class AwsKmsOptions:
    region: str
    endpoint: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


def read_options(config: BackendConfig) -> AwsKmsOptions:
    where = f"provider {config.provider_name!r}"
    region = config.options.get("region")
    if not isinstance(region, str) or not region:
        raise InvalidSpec(f"{where}: spec.awsKms.region is required, e.g. eu-west-1")
    endpoint = config.options.get("endpoint") or None
    if endpoint is not None and not (
        isinstance(endpoint, str) and endpoint.startswith(("https://", "http://"))
    ):
        raise InvalidSpec(f"{where}: spec.awsKms.endpoint must be an http(s):// URL")
    credentials = config.credentials
    access_key_id = credentials.get("accessKeyId") or None
    secret_access_key = credentials.get("secretAccessKey") or None
    if (access_key_id is None) != (secret_access_key is None) or (
        credentials.get("sessionToken") and access_key_id is None
    ):
        raise InvalidSpec(
            f"{where}: the credentialsRef Secret must hold both accessKeyId and "
            "secretAccessKey (and optionally sessionToken); remove credentialsRef to use "
            "the operator's own AWS identity",
        )
    return AwsKmsOptions(
        region=region,
        endpoint=endpoint,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        session_token=credentials.get("sessionToken") or None,
    )

"""The `spec.gcpKms` section of a provider, checked, and the Cloud KMS client it describes.

Credentials: the credentialsRef Secret's `serviceAccountJson` (a service-account
key file) is used as is; without credentialsRef the operator's application
default credentials apply (workload identity, GOOGLE_APPLICATION_CREDENTIALS).
`insecure: true` is for emulators only: a plaintext gRPC channel to
`spec.gcpKms.endpoint` with no credentials at all, so that no token can travel
unencrypted (a credentialsRef next to it is refused).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import google.auth
import grpc  # type: ignore[import-untyped]  # grpcio ships no type information
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcTransport,
)
from google.oauth2 import service_account

from keyledger.errors import InvalidSpec, ProviderAccessDenied
from keyledger.providers.base import BackendConfig
from keyledger.providers.gcp.errors import CREDENTIALS_HINT
from keyledger.providers.gcp.names import validate_key_ring_id
from keyledger.providers.sanitize import sanitize

CLOUD_KMS_SCOPE = "https://www.googleapis.com/auth/cloudkms"
SERVICE_ACCOUNT_KEY = "serviceAccountJson"
# How long destroyed versions wait in DESTROY_SCHEDULED. GCP fixes it per CryptoKey
# at creation (24 hours to 120 days); 30 days is GCP's default and the CRD's
# default deletionWindowDays. See GcpKmsBackend.schedule_deletion.
DEFAULT_DESTROY_SCHEDULED_DAYS = 30
DESTROY_SCHEDULED_DAYS = range(1, 121)


@dataclass(frozen=True)
class GcpKmsOptions:
    project: str
    location: str
    key_ring: str | None
    endpoint: str | None
    insecure: bool
    destroy_scheduled: timedelta


def read_options(config: BackendConfig) -> GcpKmsOptions:
    where = f"provider {config.provider_name!r}"
    options = config.options
    project = _path_segment(options.get("project"), "spec.gcpKms.project", where, "my-project")
    location = _path_segment(options.get("location"), "spec.gcpKms.location", where, "global")
    key_ring = options.get("keyRing") or None
    if key_ring is not None:
        key_ring = validate_key_ring_id(str(key_ring), f"{where}: spec.gcpKms.keyRing")
    endpoint = options.get("endpoint") or None
    if endpoint is not None and (not isinstance(endpoint, str) or "://" in endpoint):
        raise InvalidSpec(
            f"{where}: spec.gcpKms.endpoint must be host:port (no scheme), "
            "e.g. cloudkms.example.internal:443"
        )
    insecure = options.get("insecure", False) is True
    if insecure and endpoint is None:
        raise InvalidSpec(f"{where}: spec.gcpKms.insecure needs spec.gcpKms.endpoint (host:port)")
    if insecure and config.credentials:
        raise InvalidSpec(
            f"{where}: spec.gcpKms.insecure sends requests unencrypted, so it takes no "
            "credentials: remove credentialsRef, or remove insecure for a TLS endpoint"
        )
    days = options.get("destroyScheduledDays", DEFAULT_DESTROY_SCHEDULED_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or days not in DESTROY_SCHEDULED_DAYS:
        raise InvalidSpec(
            f"{where}: spec.gcpKms.destroyScheduledDays must be a whole number of days "
            f"from {DESTROY_SCHEDULED_DAYS.start} to {DESTROY_SCHEDULED_DAYS.stop - 1}"
        )
    return GcpKmsOptions(
        project=project,
        location=location,
        key_ring=key_ring,
        endpoint=endpoint,
        insecure=insecure,
        destroy_scheduled=timedelta(days=days),
    )


def open_kms_client(
    config: BackendConfig, options: GcpKmsOptions
) -> tuple[kms_v1.KeyManagementServiceClient, tuple[str, ...]]:
    """The client, and the credential strings that must never show in messages."""
    if options.insecure:
        assert options.endpoint is not None  # checked by read_options
        channel = grpc.insecure_channel(options.endpoint)
        transport = KeyManagementServiceGrpcTransport(channel=channel)
        return kms_v1.KeyManagementServiceClient(transport=transport), ()
    where = f"provider {config.provider_name!r}"
    credentials, secrets = _credentials(config.credentials, where)
    client_options = ClientOptions(api_endpoint=options.endpoint) if options.endpoint else None
    client = kms_v1.KeyManagementServiceClient(
        credentials=credentials, client_options=client_options
    )
    return client, secrets


def _credentials(
    data: Mapping[str, str], where: str
) -> tuple[google.auth.credentials.Credentials, tuple[str, ...]]:
    if not data:
        try:
            credentials, _ = google.auth.default(scopes=[CLOUD_KMS_SCOPE])
        except auth.DefaultCredentialsError as error:
            raise ProviderAccessDenied(
                f"{where}: no credentials for GCP Cloud KMS ({sanitize(str(error))}). Set "
                f"credentialsRef to a Secret with {SERVICE_ACCOUNT_KEY}, or give the operator "
                "application default credentials (workload identity)"
            ) from None
        return credentials, ()
    text = data.get(SERVICE_ACCOUNT_KEY)
    if not text:
        raise InvalidSpec(
            f"{where}: the credentialsRef Secret has no {SERVICE_ACCOUNT_KEY} key: put a "
            "service-account key file (JSON) there, or remove credentialsRef to use the "
            "operator's application default credentials"
        )
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise InvalidSpec(
            f"{where}: {SERVICE_ACCOUNT_KEY} in the credentialsRef Secret is not a "
            'service-account key file (JSON with "type": "service_account")'
        )
    secrets = tuple(
        s for s in (text, str(info.get("private_key", "")), info.get("private_key_id")) if s
    )
    try:
        credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=[CLOUD_KMS_SCOPE]
        )
    except (ValueError, auth.GoogleAuthError) as error:
        raise InvalidSpec(
            f"{where}: {SERVICE_ACCOUNT_KEY} cannot be used ({sanitize(str(error), secrets)}): "
            f"{CREDENTIALS_HINT}"
        ) from None
    return credentials, secrets


def _path_segment(value: object, field: str, where: str, example: str) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise InvalidSpec(f"{where}: {field} is required, without '/', e.g. {example}")
    return value

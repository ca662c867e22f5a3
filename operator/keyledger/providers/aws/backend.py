"""The `awsKms` backend: one AWS KMS key per key version, behind an alias.

Every version is its own symmetric KMS key (SYMMETRIC_DEFAULT, i.e. AES-256-GCM,
for ENCRYPT_DECRYPT); its ref is the key ARN. The alias
`alias/keyledger/<tenant>/<keyName>` points at the current version and is
re-pointed on rotate and rollback: AWS's own rotation keeps one ARN and cannot
be undone, so it is not used. Tags record tenant, key name, version and the
idempotency marker, and a second alias derived from the marker
(`alias/keyledger-marker/<marker>`) finds a version with one DescribeKey
(naming rules: `names`).

The operator's IAM identity needs exactly `REQUIRED_IAM_ACTIONS` (the test
server grants only these, so the contract suite proves the list is enough).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from keyledger.errors import (
    DATA_KEY_NOT_WRAPPED_BY_KEY,
    KEY_DISABLED,
    InvalidSpec,
    KmsKeyNotFound,
    ProviderError,
)
from keyledger.providers.aws.config import read_options
from keyledger.providers.aws.errors import (
    ALIAS_EXISTS,
    translated_errors,
)
from keyledger.providers.aws.names import (
    MARKER_TAG,
    key_id,
    marker_alias,
    primary_alias,
    version_tags,
)
from keyledger.providers.base import (
    BackendConfig,
    DataKey,
    KeyVersionRequest,
    KmsKey,
    KmsKeyState,
)
from keyledger.providers.registry import kms_provider_of, register_backend
from keyledger.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_kms.type_defs import KeyMetadataTypeDef

log = logging.getLogger(__name__)

REQUIRED_IAM_ACTIONS = (
    "kms:CreateKey",
    "kms:TagResource",  # CreateKey with Tags
    "kms:CreateAlias",
    "kms:UpdateAlias",
    "kms:DescribeKey",
    "kms:ListKeys",  # check(), and finding a key whose marker alias a crash prevented
    "kms:ListAliases",
    "kms:ListResourceTags",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:ScheduleKeyDeletion",
    "kms:GenerateDataKey",
    "kms:Decrypt",
)
# AWS accepts 7-30 days for ScheduleKeyDeletion; the CRD enforces the same bounds.
DELETION_WINDOW_DAYS = range(7, 31)

# Short timeouts and few retries: a handler must fail fast and retry later
# rather than hang a kopf worker on an unreachable endpoint.
SDK_CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"max_attempts": 3, "mode": "standard"},
    user_agent_extra="keyledger",
)
# CreateKey is not idempotent: a retry after a reply lost on the way back (the key
# was made) makes a second key. It is sent once; keyledger's own retry looks for
# the first one by its marker before creating again.
CREATE_CONFIG = SDK_CONFIG.merge(Config(retries={"total_max_attempts": 1, "mode": "standard"}))
_KEY_STATES = {
    "Enabled": KmsKeyState.ENABLED,
    "Updating": KmsKeyState.ENABLED,  # a multi-Region key changing primary: still usable
    "Disabled": KmsKeyState.DISABLED,
    "PendingDeletion": KmsKeyState.PENDING_DELETION,
    "PendingReplicaDeletion": KmsKeyState.PENDING_DELETION,
    # PendingImport, Creating, Unavailable and states AWS adds later: not usable.
}


class AwsKmsBackend:
    provider = kms_provider_of("awsKms")
    adoption_refusal: str | None = None

    def __init__(
        self,
        *,
        region: str,
        endpoint: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
    ) -> None:
        self.region: str | None = region
        self.endpoint = endpoint
        # With no keys given, boto3's default chain applies (IRSA, instance profile, env).
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region,
        )
        self._kms: KMSClient = session.client("kms", endpoint_url=endpoint, config=SDK_CONFIG)
        self._kms_create: KMSClient = session.client(
            "kms", endpoint_url=endpoint, config=CREATE_CONFIG
        )
        self._secrets = tuple(s for s in (secret_access_key, session_token, access_key_id) if s)
        self._where = f"AWS KMS at {endpoint}" if endpoint else f"AWS KMS in {region}"

    def __repr__(self) -> str:
        return f"AwsKmsBackend(region={self.region!r}, endpoint={self.endpoint!r})"

    # -- the KeyBackend protocol ------------------------------------------------

    def check(self) -> None:
        with self._errors():
            self._kms.list_keys(Limit=1)

    def create_key_version(self, request: KeyVersionRequest) -> KmsKey:
        if request.algorithm != "AES-256-GCM":
            raise InvalidSpec(
                f"spec.algorithm {request.algorithm!r} is not offered by AWS KMS here: "
                "use AES-256-GCM",
            )
        alias = marker_alias(request.marker)
        primary_alias(request.tenant, request.key_name)  # reject names AWS cannot alias, early
        existing = self.find_key_version(request.marker)
        if existing is not None:
            return existing
        with self._errors():
            created = self._kms_create.create_key(
                Description=f"keyledger {request.tenant}/{request.key_name} v{request.version}",
                KeySpec="SYMMETRIC_DEFAULT",
                KeyUsage="ENCRYPT_DECRYPT",
                Tags=[{"TagKey": k, "TagValue": v} for k, v in version_tags(request).items()],
            )["KeyMetadata"]
        # A crash here leaves a key without its marker alias: find_key_version's
        # tag scan finds it on the retry, so no second key is made.
        if not self._create_alias(alias, created["Arn"]):
            return self._keep_the_winner(alias, created["Arn"])
        return _kms_key(created["Arn"], created)

    def find_key_version(self, marker: str) -> KmsKey | None:
        alias = marker_alias(marker)
        try:
            with self._errors(alias):
                metadata = self._kms.describe_key(KeyId=alias)["KeyMetadata"]
            return _kms_key(metadata["Arn"], metadata)
        except KmsKeyNotFound:
            pass
        ref = self._find_by_marker_tag(marker)
        if ref is None:
            return None
        log.info("repairing the marker alias of %s after an interrupted creation", ref)
        if not self._create_alias(alias, ref):
            return self._keep_the_winner(alias, ref)
        return self.describe(ref)

    def describe(self, ref: str) -> KmsKey:
        try:
            with self._errors(ref):
                metadata = self._kms.describe_key(KeyId=ref)["KeyMetadata"]
        except KmsKeyNotFound:
            return KmsKey(ref=ref, state=KmsKeyState.MISSING)
        return _kms_key(ref, metadata)

    def make_primary(self, ref: str, request: KeyVersionRequest) -> None:
        alias = primary_alias(request.tenant, request.key_name)
        try:
            with self._errors(alias):
                self._kms.update_alias(AliasName=alias, TargetKeyId=ref)
            return
        except KmsKeyNotFound:
            pass  # the first version: no alias yet (a missing key fails CreateAlias too)
        if not self._create_alias(alias, ref):  # made meanwhile by another worker
            with self._errors(alias):
                self._kms.update_alias(AliasName=alias, TargetKeyId=ref)

    def disable(self, ref: str) -> None:
        with self._errors(ref):
            self._kms.disable_key(KeyId=key_id(ref))

    def enable(self, ref: str) -> None:
        with self._errors(ref):
            self._kms.enable_key(KeyId=key_id(ref))

    def schedule_deletion(self, ref: str, window_days: int) -> datetime:
        if window_days not in DELETION_WINDOW_DAYS:
            raise InvalidSpec(
                f"spec.deletionWindowDays is {window_days}, but AWS KMS schedules deletion "
                f"{DELETION_WINDOW_DAYS.start}-{DELETION_WINDOW_DAYS.stop - 1} days ahead: "
                "set a value in that range",
            )
        with self._errors(ref):
            scheduled = self._kms.schedule_key_deletion(
                KeyId=key_id(ref), PendingWindowInDays=window_days
            )
        return scheduled["DeletionDate"].astimezone(UTC)

    def destroy_due(self, now: datetime) -> list[str]:
        """Nothing to do: AWS KMS deletes a scheduled key itself when its window ends."""
        return []

    def generate_data_key(self, ref: str) -> DataKey:
        """A fresh AES-256 data key wrapped by `ref`.

        The key's state is checked first (one DescribeKey): AWS refuses a disabled
        or pending-deletion key by itself, but moto does not, and the contract
        requires the refusal from every backend.
        """
        self._require_usable(ref)
        with self._errors(ref):
            generated = self._kms.generate_data_key(KeyId=ref, KeySpec="AES_256")
        return DataKey(plaintext=generated["Plaintext"], wrapped=generated["CiphertextBlob"])

    def unwrap_data_key(self, ref: str, wrapped: bytes) -> bytes:
        """The data key `ref` wrapped; refused when the key is not usable (checked
        first, as in generate_data_key) or did not wrap it."""
        self._require_usable(ref)
        with self._errors(ref):
            unwrapped = self._kms.decrypt(KeyId=ref, CiphertextBlob=wrapped)
        if key_id(unwrapped.get("KeyId", "")) != key_id(ref):
            raise ProviderError(
                f"{self._where}: the data key was not wrapped by {ref}",
                reason=DATA_KEY_NOT_WRAPPED_BY_KEY,
            )
        return unwrapped["Plaintext"]

    def close(self) -> None:
        self._kms.close()
        self._kms_create.close()

    # -- internals ----------------------------------------------------------------

    def _errors(self, target: str | None = None) -> AbstractContextManager[None]:
        return translated_errors(where=self._where, target=target, secrets=self._secrets)

    def _create_alias(self, alias: str, ref: str) -> bool:
        """Create `alias` -> `ref`; False when the alias already exists."""
        try:
            with self._errors(alias):
                self._kms.create_alias(AliasName=alias, TargetKeyId=ref)
        except ProviderError as error:
            if error.reason != ALIAS_EXISTS:
                raise
            return False
        return True

    def _keep_the_winner(self, alias: str, ours: str) -> KmsKey:
        """Two workers created a key for one marker at once: keep the aliased one."""
        with self._errors(alias):
            winner = self._kms.describe_key(KeyId=alias)["KeyMetadata"]
        if winner["Arn"] != ours:
            log.warning("scheduling deletion of %s: a duplicate of %s", ours, winner["Arn"])
            self.schedule_deletion(ours, DELETION_WINDOW_DAYS.start)
        return _kms_key(winner["Arn"], winner)

    def _find_by_marker_tag(self, marker: str) -> str | None:
        """The key tagged with `marker`, looked for among keys that have no alias.

        Only a creation interrupted before its marker alias leaves such a key, so
        keys with any alias are skipped: that keeps the ListResourceTags calls
        few in an account full of keyledger keys.
        """
        with self._errors():
            aliased = {
                alias["TargetKeyId"]
                for page in self._kms.get_paginator("list_aliases").paginate()
                for alias in page["Aliases"]
                if "TargetKeyId" in alias
            }
            pages = list(self._kms.get_paginator("list_keys").paginate())
        for key in (k for page in pages for k in page["Keys"] if k["KeyId"] not in aliased):
            try:
                with self._errors(key["KeyArn"]):
                    tags = self._kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]
            except KmsKeyNotFound:
                continue  # deleted since ListKeys
            if {"TagKey": MARKER_TAG, "TagValue": marker} in tags:
                return key["KeyArn"]
        return None

    def _require_usable(self, ref: str) -> None:
        state = self.describe(ref).state
        if state is KmsKeyState.MISSING:
            raise KmsKeyNotFound(f"{self._where}: key {ref} does not exist")
        if state is not KmsKeyState.ENABLED:
            raise ProviderError(
                f"{self._where}: key {ref} is {state.value} and refuses cryptographic use; "
                "enable it (or cancel its deletion) if it should still be used",
                reason=KEY_DISABLED,
            )


def _kms_key(ref: str, metadata: KeyMetadataTypeDef) -> KmsKey:
    deletion = metadata.get("DeletionDate")
    return KmsKey(
        ref=ref,
        state=_KEY_STATES.get(metadata.get("KeyState", ""), KmsKeyState.DISABLED),
        deletion_date=deletion.astimezone(UTC) if deletion is not None else None,
    )


@register_backend("awsKms")
def open_aws_kms_backend(config: BackendConfig, settings: Settings) -> AwsKmsBackend:
    options = read_options(config)
    return AwsKmsBackend(
        region=options.region,
        endpoint=options.endpoint,
        access_key_id=options.access_key_id,
        secret_access_key=options.secret_access_key,
        session_token=options.session_token,
    )

"""The `azureKeyVault` backend: Azure Key Vault (or Managed HSM) keys, through azure-keyvault-keys.

Versions. One Key Vault key per (tenant, keyName) (naming: `names`); each
ledger version is a Key Vault key *version*, made by `create_key` on the same
name, and its ref is the versioned key id. The ledger pins that id, so
`make_primary` only validates: Key Vault's own "current" is always the newest
version and cannot be rolled back. (`rotate_key` would also make a version, but
it takes no tags, and the tags are what make creation idempotent.) An adopted
key (spec.adopt) keeps its own name: it is version 1, and the versions rotated
in after it are made under keyledger's name.

Data keys. Standard vaults hold no AES keys, so a version is an RSA-3072 key
(RSA-HSM on premium vaults) and a data key is 32 random bytes made here and
wrapped by the vault with RSA-OAEP-256 (A256KW for oct-HSM keys on a Managed
HSM). Wrap and unwrap are remote calls on the versioned key: the vault enforces
its own state and key operations, and logs every use.

State. Key Vault has a per-version `enabled` flag: disable/enable set it. It
deletes only whole keys (soft delete, recoverable for the vault's retention),
so `schedule_deletion` disables the version and records the date in its
`keyledger-delete-after` tag; the version then describes as PENDING_DELETION
and keyledger refuses it, as the vault refuses the disabled key. Destroying
material is a whole-key step that keyledger does not take (`destroy_due` does
nothing): once the last version's date has passed, an administrator can delete
(and purge) the key.

Idempotency. Every version is tagged with the request's marker. Creation first
looks for a version of the key with that tag, so a retry after a crash returns
the version already made; two workers racing keep the oldest and disable the
other.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

from azure.core.credentials import TokenCredential
from azure.keyvault.keys import KeyOperation, KeyProperties

from keyledger.errors import (
    DATA_KEY_NOT_WRAPPED_BY_KEY,
    KEY_DISABLED,
    KEY_PENDING_DELETION,
    InvalidSpec,
    KmsKeyNotFound,
    ProviderError,
)
from keyledger.providers.azure.config import (
    AzureKeyVaultOptions,
    EmulatorTrust,
    azure_credential,
    key_client,
    key_operation,
    read_options,
)
from keyledger.providers.azure.errors import (
    REQUEST_REJECTED,
    translated_errors,
)
from keyledger.providers.azure.names import (
    DELETE_AFTER_TAG,
    KEY_PREFIX,
    MARKER_TAG,
    KeyVersionId,
    deletion_date,
    deletion_tag_value,
    scheduled_for_deletion,
    vault_key_name,
    version_tags,
)
from keyledger.providers.base import BackendConfig, DataKey, KeyVersionRequest, KmsKey, KmsKeyState
from keyledger.providers.registry import kms_provider_of, register_backend
from keyledger.settings import Settings

log = logging.getLogger(__name__)

RSA_KEY_SIZE = 3072
DATA_KEY_BYTES = 32
_WRAP_ALGORITHMS = {"RSA": "RSA-OAEP-256", "RSA-HSM": "RSA-OAEP-256", "oct-HSM": "A256KW"}


class AzureKeyVaultBackend:
    provider = kms_provider_of("azureKeyVault")
    adoption_refusal: str | None = None
    region: str | None = None

    def __init__(
        self,
        options: AzureKeyVaultOptions,
        credential: TokenCredential,
        *,
        secrets: tuple[str, ...] = (),
        emulator: EmulatorTrust | None = None,
    ) -> None:
        self.endpoint: str | None = options.vault_url
        self.key_type = options.key_type
        self._vault_url = options.vault_url
        self._credential = credential
        self._secrets = secrets
        self._where = f"Azure Key Vault {options.vault_url}"
        self._keys = key_client(options, credential, emulator)

    def __repr__(self) -> str:
        return f"AzureKeyVaultBackend(vault_url={self.endpoint!r}, key_type={self.key_type!r})"

    # -- the KeyBackend protocol ------------------------------------------------

    def check(self) -> None:
        with self._errors("ListKeys"):
            next(iter(self._keys.list_properties_of_keys(max_page_size=1)), None)

    def create_key_version(self, request: KeyVersionRequest) -> KmsKey:
        if request.algorithm != "AES-256-GCM":
            raise InvalidSpec(
                f"spec.algorithm {request.algorithm!r} is not offered with Azure Key Vault: "
                "use AES-256-GCM (data keys wrapped by the vault)"
            )
        name = vault_key_name(request.tenant, request.key_name)
        existing = self._find_in_key(name, request.marker)
        if existing is not None:
            return existing
        tags = version_tags(request)
        operations: list[str | KeyOperation] = [KeyOperation.wrap_key, KeyOperation.unwrap_key]
        with self._errors("CreateKey", name):
            if self.key_type == "oct-HSM":
                created = self._keys.create_oct_key(
                    name, size=256, hardware_protected=True, key_operations=operations, tags=tags
                )
            else:
                created = self._keys.create_rsa_key(
                    name,
                    size=RSA_KEY_SIZE,
                    hardware_protected=self.key_type == "RSA-HSM",
                    key_operations=operations,
                    tags=tags,
                )
        # Another worker may have created one for the same marker meanwhile.
        winner = self._find_in_key(name, request.marker)
        if winner is not None and winner.ref != created.id:
            log.warning("disabling %s: a duplicate of %s", created.id, winner.ref)
            self.schedule_deletion(created.id, 1)
            return winner
        return _kms_key(created.id, created.properties)

    def find_key_version(self, marker: str) -> KmsKey | None:
        """The version tagged with `marker`, searched across keyledger's keys in the vault.

        The marker does not say which key it belongs to, so this lists the vault's
        keyledger keys; creation, which knows the key, looks in that key only.
        """
        with self._errors("ListKeys"):
            names = [
                p.name
                for p in self._keys.list_properties_of_keys()
                if p.name and p.name.startswith(KEY_PREFIX)
            ]
        for name in names:
            found = self._find_in_key(name, marker)
            if found is not None:
                return found
        return None

    def describe(self, ref: str) -> KmsKey:
        self._parse(ref)  # a ref of another vault is a mistake, not a missing key
        try:
            properties = self._properties(ref)
        except KmsKeyNotFound:
            # Also a key soft-deleted as a whole: gone for use, recoverable by an admin.
            return KmsKey(ref=ref, state=KmsKeyState.MISSING)
        return _kms_key(ref, properties)

    def make_primary(self, ref: str, request: KeyVersionRequest) -> None:
        """Check that `ref` can be the current version; nothing changes in Key Vault.

        The ref need not be under `request`'s Key Vault name: an adopted version
        (spec.adopt) keeps the name it was made with. Which refs belong to which
        key is the ledger's record (adoption refuses a ref another key owns).
        """
        state = self.describe(ref).state
        if state is KmsKeyState.MISSING:
            raise KmsKeyNotFound(f"{self._where}: key version {ref} does not exist")
        if state is KmsKeyState.PENDING_DELETION:
            raise ProviderError(
                f"{ref} is scheduled for deletion and cannot become the primary version",
                reason=KEY_PENDING_DELETION,
            )
        # Nothing to change in Key Vault: the ledger pins the versioned id.

    def disable(self, ref: str) -> None:
        target = self._parse(ref)
        with self._errors("UpdateKey", ref):
            self._keys.update_key_properties(target.name, target.version, enabled=False)

    def enable(self, ref: str) -> None:
        target = self._parse(ref)
        if scheduled_for_deletion(self._properties(ref).tags):
            raise ProviderError(
                f"{ref} is scheduled for deletion and cannot be enabled again",
                reason=KEY_PENDING_DELETION,
            )
        with self._errors("UpdateKey", ref):
            self._keys.update_key_properties(target.name, target.version, enabled=True)

    def schedule_deletion(self, ref: str, window_days: int) -> datetime:
        if window_days < 1:
            raise InvalidSpec(f"spec.deletionWindowDays is {window_days}: use 1 or more days")
        target = self._parse(ref)
        tags = dict(self._properties(ref).tags or {})
        existing = deletion_date(tags)
        if existing is not None:
            return existing  # a retry: keep the first schedule
        when = (datetime.now(UTC) + timedelta(days=window_days)).replace(microsecond=0)
        tags[DELETE_AFTER_TAG] = deletion_tag_value(when)
        with self._errors("UpdateKey", ref):
            self._keys.update_key_properties(target.name, target.version, enabled=False, tags=tags)
        return when

    def destroy_due(self, now: datetime) -> list[str]:
        """Nothing: Key Vault cannot destroy a single key version, so none is ever destroyed.

        A version scheduled for deletion stays disabled and tagged with its date,
        and keeps describing as PENDING_DELETION after the date has passed: Key
        Vault deletes only whole keys (soft delete, then purge). Deleting the key
        once the dates of all its versions have passed is not done here; an
        administrator deletes (and purges) such a key.
        """
        return []

    def generate_data_key(self, ref: str) -> DataKey:
        target = self._require_usable(ref)
        plaintext = secrets.token_bytes(DATA_KEY_BYTES)
        wrapped = self._key_operation(target, "wrapKey", plaintext)
        return DataKey(plaintext=plaintext, wrapped=wrapped)

    def unwrap_data_key(self, ref: str, wrapped: bytes) -> bytes:
        target = self._require_usable(ref)
        try:
            return self._key_operation(target, "unwrapKey", wrapped)
        except ProviderError as error:
            if error.reason != REQUEST_REJECTED:
                raise
            raise ProviderError(
                f"{self._where}: the data key was not wrapped by {ref}, or is damaged",
                reason=DATA_KEY_NOT_WRAPPED_BY_KEY,
            ) from None

    def close(self) -> None:
        self._keys.close()
        close = getattr(self._credential, "close", None)
        if callable(close):
            close()

    # -- internals ----------------------------------------------------------------

    def _errors(self, operation: str, target: str | None = None) -> AbstractContextManager[None]:
        return translated_errors(
            where=self._where, operation=operation, target=target, secrets=self._secrets
        )

    def _parse(self, ref: str) -> KeyVersionId:
        return KeyVersionId.parse(ref, self._vault_url)

    def _properties(self, ref: str) -> KeyProperties:
        target = self._parse(ref)
        with self._errors("GetKey", ref):
            return self._keys.get_key(target.name, target.version).properties

    def _find_in_key(self, name: str, marker: str) -> KmsKey | None:
        """The version of key `name` tagged with `marker`; the oldest if a race made two."""
        try:
            with self._errors("ListKeyVersions", name):
                tagged = [
                    p
                    for p in self._keys.list_properties_of_key_versions(name)
                    if (p.tags or {}).get(MARKER_TAG) == marker and p.id
                ]
        except KmsKeyNotFound:
            return None
        if not tagged:
            return None
        oldest = min(tagged, key=lambda p: (p.created_on or datetime.max.replace(tzinfo=UTC), p.id))
        assert oldest.id is not None
        return _kms_key(oldest.id, oldest)

    def _require_usable(self, ref: str) -> KeyVersionId:
        """The parsed ref, if the version may be used; the vault refuses a disabled key by
        itself, but a version scheduled for deletion only keyledger knows to refuse."""
        state = self.describe(ref).state
        if state is KmsKeyState.MISSING:
            raise KmsKeyNotFound(f"{self._where}: key version {ref} does not exist")
        if state is KmsKeyState.PENDING_DELETION:
            raise ProviderError(
                f"{self._where}: key version {ref} is scheduled for deletion and refuses "
                "cryptographic use",
                reason=KEY_PENDING_DELETION,
            )
        if state is not KmsKeyState.ENABLED:
            raise ProviderError(
                f"{self._where}: key version {ref} is disabled (or outside its validity "
                "dates) and refuses cryptographic use; enable it if it should still be used",
                reason=KEY_DISABLED,
            )
        return self._parse(ref)

    def _key_operation(self, target: KeyVersionId, operation: str, value: bytes) -> bytes:
        algorithm = _WRAP_ALGORITHMS[self.key_type]
        with self._errors(operation[0].upper() + operation[1:], target.ref):
            kid, result = key_operation(
                self._keys, target.name, target.version, operation, algorithm, value
            )
        if kid.lower() != target.ref.lower():
            raise ProviderError(
                f"{self._where}: {operation} answered for {kid[:200]!r}, not {target.ref}"
            )
        return result


def _kms_key(ref: str, properties: KeyProperties) -> KmsKey:
    now = datetime.now(UTC)
    if scheduled_for_deletion(properties.tags):
        state = KmsKeyState.PENDING_DELETION
    elif (
        not properties.enabled
        or (properties.not_before is not None and _utc(properties.not_before) > now)
        or (properties.expires_on is not None and _utc(properties.expires_on) <= now)
    ):
        state = KmsKeyState.DISABLED  # the vault refuses crypto outside nbf/exp too
    else:
        state = KmsKeyState.ENABLED
    return KmsKey(ref=ref, state=state, deletion_date=deletion_date(properties.tags))


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def open_azure_key_vault_backend(
    config: BackendConfig, settings: Settings, *, emulator: EmulatorTrust | None = None
) -> AzureKeyVaultBackend:
    options = read_options(config)
    transport = {"connection_verify": emulator.ca_file} if emulator else {}
    credential = azure_credential(config, options, instance_discovery=emulator is None, **transport)
    secret = config.credentials.get("clientSecret") or ""
    return AzureKeyVaultBackend(
        options, credential, secrets=(secret,) if secret else (), emulator=emulator
    )


# Registered by a call, not as a decorator: the decorator's type would hide the
# tests' `emulator` keyword from mypy.
register_backend("azureKeyVault")(open_azure_key_vault_backend)

"""The `local` backend: software AES keys in a file. FOR DEMOS AND TESTS ONLY.

Key material sits in a file on the operator's disk (mode 0600; see keystore.py),
outside the ledger database. Nothing here protects it the way a KMS or HSM does, so the
backend announces itself in every Ready message and log line it causes.
"""

from __future__ import annotations

import base64
import logging
import secrets
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.errors import KEY_DISABLED, KmsKeyNotFound, ProviderError
from keyledger.providers.base import (
    BackendConfig,
    DataKey,
    KeyVersionRequest,
    KmsKey,
    KmsKeyState,
)
from keyledger.providers.local.config import read_options
from keyledger.providers.local.errors import translate_error
from keyledger.providers.local.keystore import DEV_ONLY_NOTICE, Entry, Keystore, Snapshot
from keyledger.providers.local.names import key_id_of, version_ref
from keyledger.providers.registry import kms_provider_of, register_backend
from keyledger.settings import Settings

log = logging.getLogger(__name__)


class LocalBackend:
    provider = kms_provider_of("local")
    adoption_refusal: str | None = None
    region: str | None = None

    def __init__(self, keystore: Path) -> None:
        self.path = keystore
        self.endpoint: str | None = f"file://{keystore}"
        self._keystore = Keystore(keystore)

    # -- the KeyBackend protocol ------------------------------------------------

    def check(self) -> None:
        self._snapshot()

    def create_key_version(self, request: KeyVersionRequest) -> KmsKey:
        with self._changing() as (keys, markers):
            found = markers.get(request.marker)
            if found is not None:
                return self._describe_entry(found, keys[found])
            key_id = str(uuid.uuid4())
            keys[key_id] = {
                "marker": request.marker,
                "material": base64.b64encode(AESGCM.generate_key(bit_length=256)).decode(),
                "enabled": True,
                "deletion_date": None,
                "labels": dict(request.labels),
                "created_at": datetime.now(UTC).isoformat(),
            }
            return self._describe_entry(key_id, keys[key_id])

    def find_key_version(self, marker: str) -> KmsKey | None:
        snapshot = self._snapshot()
        found = snapshot.markers.get(marker)
        return None if found is None else self._describe_entry(found, snapshot.keys[found])

    def describe(self, ref: str) -> KmsKey:
        key_id = self._key_id(ref)
        entry = self._snapshot().keys.get(key_id)
        if entry is None:
            return KmsKey(ref=ref, state=KmsKeyState.MISSING)
        return self._describe_entry(key_id, entry)

    def make_primary(self, ref: str, request: KeyVersionRequest) -> None:
        # The ledger pins the active version; a file has no "primary" pointer.
        self._entry_exists(ref)

    def disable(self, ref: str) -> None:
        self._set(ref, enabled=False)

    def enable(self, ref: str) -> None:
        self._set(ref, enabled=True)

    def schedule_deletion(self, ref: str, window_days: int) -> datetime:
        when = datetime.now(UTC) + timedelta(days=window_days)
        self._set(ref, enabled=False, deletion_date=when.isoformat())
        return when

    def destroy_due(self, now: datetime) -> list[str]:
        """Remove the entries whose deletion date has passed; their material goes with them."""

        def due(keys: Mapping[str, Entry]) -> list[str]:
            return [
                key_id
                for key_id, entry in keys.items()
                if entry.get("deletion_date")
                and datetime.fromisoformat(entry["deletion_date"]) <= now
            ]

        if not due(self._snapshot().keys):
            return []  # the usual case, decided without the lock or a write
        with self._changing() as (keys, _):
            gone = due(keys)
            for key_id in gone:
                del keys[key_id]
        return [self._ref(key_id) for key_id in gone]

    def generate_data_key(self, ref: str) -> DataKey:
        plaintext = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(12)
        wrapped = nonce + AESGCM(self._usable_material(ref)).encrypt(nonce, plaintext, None)
        return DataKey(plaintext=plaintext, wrapped=wrapped)

    def unwrap_data_key(self, ref: str, wrapped: bytes) -> bytes:
        try:
            return AESGCM(self._usable_material(ref)).decrypt(wrapped[:12], wrapped[12:], None)
        except (InvalidTag, ValueError) as exc:  # never echo the bytes
            raise ProviderError(f"cannot unwrap data key with {ref}: not wrapped by it") from exc

    def close(self) -> None:
        pass

    # -- internals ----------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        try:
            return self._keystore.snapshot()
        except OSError as exc:
            raise translate_error(exc, keystore=self.path) from exc

    @contextmanager
    def _changing(self) -> Iterator[tuple[MutableMapping[str, Entry], Mapping[str, str]]]:
        try:
            with self._keystore.changing() as (keys, markers):
                yield keys, markers
        except OSError as exc:
            raise translate_error(exc, keystore=self.path) from exc

    def _key_id(self, ref: str) -> str:
        return key_id_of(ref, self.path.stem)

    def _ref(self, key_id: str) -> str:
        return version_ref(self.path.stem, key_id)

    def _describe_entry(self, key_id: str, entry: Entry) -> KmsKey:
        deletion = entry.get("deletion_date")
        if deletion is not None:
            state = KmsKeyState.PENDING_DELETION
        elif entry["enabled"]:
            state = KmsKeyState.ENABLED
        else:
            state = KmsKeyState.DISABLED
        return KmsKey(
            ref=self._ref(key_id),
            state=state,
            deletion_date=datetime.fromisoformat(deletion) if deletion else None,
        )

    def _entry_exists(self, ref: str) -> None:
        if self.describe(ref).state is KmsKeyState.MISSING:
            raise KmsKeyNotFound(f"{ref} does not exist in local keystore {self.path.stem!r}")

    def _set(self, ref: str, **changes: Any) -> None:
        with self._changing() as (keys, _):
            key_id = self._key_id(ref)
            entry = keys.get(key_id)
            if entry is None:
                raise KmsKeyNotFound(f"{ref} does not exist in local keystore {self.path.stem!r}")
            keys[key_id] = {**entry, **changes}

    def _usable_material(self, ref: str) -> bytes:
        entry = self._snapshot().keys.get(self._key_id(ref))
        if entry is None:
            raise KmsKeyNotFound(f"{ref} does not exist in local keystore {self.path.stem!r}")
        if not entry["enabled"] or entry.get("deletion_date"):
            raise ProviderError(f"{ref} is disabled", reason=KEY_DISABLED)
        return base64.b64decode(entry["material"])


@register_backend("local")
def open_local_backend(config: BackendConfig, settings: Settings) -> LocalBackend:
    options = read_options(config, settings)
    log.warning("provider %s uses the %s", config.provider_name, DEV_ONLY_NOTICE)
    return LocalBackend(options.keystore)

"""The `local` backend: software AES keys in a file. FOR DEMOS AND TESTS ONLY.

Key material sits in a JSON file on the operator's disk (mode 0600), outside
the ledger database. Nothing here protects it the way a KMS or HSM does, so the
backend announces itself in every Ready message and log line it causes.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from filelock import FileLock

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
from keyledger.providers.local.names import key_id_of, version_ref
from keyledger.providers.registry import kms_provider_of, register_backend
from keyledger.settings import Settings

log = logging.getLogger(__name__)

DEV_ONLY_NOTICE = "local backend: software keys in a file, NOT FOR PRODUCTION"


class LocalBackend:
    provider = kms_provider_of("local")
    adoption_refusal: str | None = None
    region: str | None = None

    def __init__(self, keystore: Path) -> None:
        self.path = keystore
        self.endpoint: str | None = f"file://{keystore}"
        self._lock = FileLock(str(keystore) + ".lock")

    # -- the KeyBackend protocol ------------------------------------------------

    def check(self) -> None:
        with self._keystore():
            pass

    def create_key_version(self, request: KeyVersionRequest) -> KmsKey:
        with self._keystore() as keys:
            for key_id, entry in keys.items():
                if entry["marker"] == request.marker:
                    return self._describe_entry(key_id, entry)
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
        with self._keystore() as keys:
            for key_id, entry in keys.items():
                if entry["marker"] == marker:
                    return self._describe_entry(key_id, entry)
        return None

    def describe(self, ref: str) -> KmsKey:
        with self._keystore() as keys:
            entry = keys.get(self._key_id(ref))
            if entry is None:
                return KmsKey(ref=ref, state=KmsKeyState.MISSING)
            return self._describe_entry(self._key_id(ref), entry)

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
        with self._keystore() as keys:
            due = [
                key_id
                for key_id, entry in keys.items()
                if entry.get("deletion_date")
                and datetime.fromisoformat(entry["deletion_date"]) <= now
            ]
            for key_id in due:
                del keys[key_id]
        return [self._ref(key_id) for key_id in due]

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

    @contextmanager
    def _keystore(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The keystore's entries, locked; written back when the block ends."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self._lock:
                keys: dict[str, dict[str, Any]] = {}
                if self.path.exists():
                    keys = json.loads(self.path.read_text())["keys"]
                before = json.dumps(keys, sort_keys=True)
                yield keys
                if json.dumps(keys, sort_keys=True) != before:
                    self._write(keys)
        except OSError as exc:
            raise translate_error(exc, keystore=self.path) from exc

    def _write(self, keys: dict[str, dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"notice": DEV_ONLY_NOTICE, "keys": keys}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def _key_id(self, ref: str) -> str:
        return key_id_of(ref, self.path.stem)

    def _ref(self, key_id: str) -> str:
        return version_ref(self.path.stem, key_id)

    def _describe_entry(self, key_id: str, entry: dict[str, Any]) -> KmsKey:
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
        with self._keystore() as keys:
            entry = keys.get(self._key_id(ref))
            if entry is None:
                raise KmsKeyNotFound(f"{ref} does not exist in local keystore {self.path.stem!r}")
            entry.update(changes)

    def _usable_material(self, ref: str) -> bytes:
        with self._keystore() as keys:
            entry = keys.get(self._key_id(ref))
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

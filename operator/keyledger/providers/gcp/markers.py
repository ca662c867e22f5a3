"""Idempotent creation of CryptoKeyVersions, recorded in the CryptoKey's labels.

CryptoKeyVersions carry no labels, and their numbers are chosen by GCP, so the
CryptoKey's labels record which version each idempotency marker made
(`keyledger-m-<marker>: "<N>"`, see `names`). Creating version N+1 is three
calls, and a crash may fall between any two:

1. claim: `keyledger-pending: <marker label>`, `keyledger-pending-after: <highest N>`
2. CreateCryptoKeyVersion
3. record: `keyledger-m-<marker>: <new N>`, claim removed

A retry that finds its own claim adopts the lowest version above `pending-after`
that no marker records (made in step 2 before the crash) instead of making
another. Version 1 is made with the CryptoKey, whose labels already record the
marker, so that step is atomic.

GCP has no compare-and-set on labels: two writers creating versions of one
CryptoKey at once could lose a claim. keyledger never does that (kopf handles one
resource at a time, and a key belongs to one resource); the worst outcome would be
an unused, unrecorded version, never a marker pointing at the wrong one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from google.cloud import kms_v1

from keyledger.errors import KmsKeyNotFound, ProviderError
from keyledger.providers.base import KeyVersionRequest
from keyledger.providers.gcp.config import GcpKmsOptions
from keyledger.providers.gcp.errors import RESOURCE_EXISTS
from keyledger.providers.gcp.names import (
    KEY_RING_PREFIX,
    PENDING_AFTER_LABEL,
    PENDING_LABEL,
    VersionRef,
    crypto_key_id,
    crypto_key_labels,
    is_marker_label,
    key_ring_id,
    location_name,
    marker_label,
    version_name,
)

log = logging.getLogger(__name__)

FIRST_VERSION = 1
# Markers matter only until the ledger has recorded the ref (one creation at a
# time per key); older ones are dropped to stay well inside GCP's 64 labels.
MAX_MARKER_LABELS = 32
_TIMEOUT_S = 10.0
_Algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm  # GOOGLE_SYMMETRIC_* = AES-256-GCM

Errors = Callable[[str, str], AbstractContextManager[None]]


class VersionMarkers:
    def __init__(
        self, client: kms_v1.KeyManagementServiceClient, options: GcpKmsOptions, errors: Errors
    ) -> None:
        self._kms = client
        self._options = options
        self._errors = errors
        self._location = location_name(options.project, options.location)

    def create_version(self, request: KeyVersionRequest) -> str:
        """The ref of the version made for `request.marker`, made now if need be."""
        crypto_key = self.crypto_key_name(request.tenant, request.key_name)
        label = marker_label(request.marker)
        key = self._get(crypto_key)
        if key is None:
            if self._create_crypto_key(request, crypto_key, label):
                return version_name(crypto_key, FIRST_VERSION)
            key = self._get(crypto_key)  # made meanwhile by another writer
            if key is None:
                raise ProviderError(f"{crypto_key} exists and does not: deleted meanwhile?")
        labels = dict(key.labels)
        recorded = self._recorded(crypto_key, labels, label)
        if recorded is not None:
            return recorded
        labels[PENDING_LABEL] = label
        labels[PENDING_AFTER_LABEL] = str(max(self._version_numbers(crypto_key), default=0))
        self._write_labels(crypto_key, labels)
        with self._errors("CreateCryptoKeyVersion", crypto_key):
            made = self._kms.create_crypto_key_version(
                request={"parent": crypto_key, "crypto_key_version": {}}, timeout=_TIMEOUT_S
            )
        number = VersionRef.parse(made.name).number
        self._record(crypto_key, labels, label, number)
        return version_name(crypto_key, number)

    def find_version(self, marker: str) -> str | None:
        """The ref recorded for `marker` in any keyledger CryptoKey of the location."""
        label = marker_label(marker)
        for key in self._keyledger_crypto_keys():
            ref = self._recorded(key.name, dict(key.labels), label)
            if ref is not None:
                return ref
        return None

    def crypto_key_name(self, tenant: str, key_name: str) -> str:
        ring = key_ring_id(tenant, self._options.key_ring)
        key = crypto_key_id(tenant, key_name, shared_ring=self._options.key_ring is not None)
        return f"{self._location}/keyRings/{ring}/cryptoKeys/{key}"

    # -- internals ----------------------------------------------------------------

    def _recorded(self, crypto_key: str, labels: dict[str, str], label: str) -> str | None:
        """The version recorded for `label`, or the one a crash left unrecorded after its claim."""
        if label in labels:
            return version_name(crypto_key, labels[label])
        if labels.get(PENDING_LABEL) != label:
            return None
        after = int(labels.get(PENDING_AFTER_LABEL) or 0)
        taken = {int(v) for k, v in labels.items() if is_marker_label(k) and v.isdigit()}
        unrecorded = [n for n in self._version_numbers(crypto_key) if n > after and n not in taken]
        if not unrecorded:
            return None  # the crash came before CreateCryptoKeyVersion
        number = min(unrecorded)
        log.info("recording version %d of %s after an interrupted creation", number, crypto_key)
        self._record(crypto_key, labels, label, number)
        return version_name(crypto_key, number)

    def _record(self, crypto_key: str, labels: dict[str, str], label: str, number: int) -> None:
        labels[label] = str(number)
        labels.pop(PENDING_LABEL, None)
        labels.pop(PENDING_AFTER_LABEL, None)
        markers = sorted(
            (k for k, v in labels.items() if is_marker_label(k) and v.isdigit()),
            key=lambda k: int(labels[k]),
            reverse=True,
        )
        for old in markers[MAX_MARKER_LABELS:]:
            del labels[old]
        self._write_labels(crypto_key, labels)

    def _write_labels(self, crypto_key: str, labels: dict[str, str]) -> None:
        with self._errors("UpdateCryptoKey", crypto_key):
            self._kms.update_crypto_key(
                request={
                    "crypto_key": {"name": crypto_key, "labels": labels},
                    "update_mask": {"paths": ["labels"]},
                },
                timeout=_TIMEOUT_S,
            )

    def _get(self, crypto_key: str) -> kms_v1.CryptoKey | None:
        try:
            with self._errors("GetCryptoKey", crypto_key):
                return self._kms.get_crypto_key(request={"name": crypto_key}, timeout=_TIMEOUT_S)
        except KmsKeyNotFound:
            return None

    def _create_crypto_key(self, request: KeyVersionRequest, crypto_key: str, label: str) -> bool:
        """Create the CryptoKey (and its key ring if missing); False if it already exists."""
        ring, _, key_id = crypto_key.rpartition("/cryptoKeys/")
        body = {
            "purpose": kms_v1.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT,
            "version_template": {"algorithm": _Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION},
            "labels": {**crypto_key_labels(request), label: str(FIRST_VERSION)},
            "destroy_scheduled_duration": self._options.destroy_scheduled,
        }
        for attempt in ("key", "ring and key"):
            try:
                with self._errors("CreateCryptoKey", crypto_key):
                    self._kms.create_crypto_key(
                        request={"parent": ring, "crypto_key_id": key_id, "crypto_key": body},
                        timeout=_TIMEOUT_S,
                    )
                return True
            except KmsKeyNotFound:
                if attempt != "key":
                    raise
                self._create_key_ring(ring)  # missing: made on first use
            except ProviderError as error:
                if error.reason != RESOURCE_EXISTS:
                    raise
                return False
        raise AssertionError("unreachable")  # the loop returns or raises

    def _create_key_ring(self, ring: str) -> None:
        parent, _, ring_id = ring.rpartition("/keyRings/")
        try:
            with self._errors("CreateKeyRing", ring):
                self._kms.create_key_ring(
                    request={"parent": parent, "key_ring_id": ring_id, "key_ring": {}},
                    timeout=_TIMEOUT_S,
                )
        except ProviderError as error:
            if error.reason != RESOURCE_EXISTS:
                raise

    def _version_numbers(self, crypto_key: str) -> list[int]:
        with self._errors("ListCryptoKeyVersions", crypto_key):
            versions = self._kms.list_crypto_key_versions(
                request={"parent": crypto_key, "page_size": 1000}, timeout=_TIMEOUT_S
            )
            return [VersionRef.parse(v.name).number for v in versions]

    def _keyledger_crypto_keys(self) -> Iterator[kms_v1.CryptoKey]:
        for ring in self._keyledger_rings():
            try:
                with self._errors("ListCryptoKeys", ring):
                    keys = list(
                        self._kms.list_crypto_keys(
                            request={"parent": ring, "page_size": 1000}, timeout=_TIMEOUT_S
                        )
                    )
            except KmsKeyNotFound:
                continue  # a configured ring not made yet
            yield from keys

    def _keyledger_rings(self) -> list[str]:
        if self._options.key_ring is not None:
            return [f"{self._location}/keyRings/{self._options.key_ring}"]
        prefix = f"{self._location}/keyRings/{KEY_RING_PREFIX}"
        with self._errors("ListKeyRings", self._location):
            rings = self._kms.list_key_rings(
                request={"parent": self._location, "page_size": 1000}, timeout=_TIMEOUT_S
            )
            # Filtered here too: some emulators list every ring, whatever the parent.
            return [r.name for r in rings if r.name.startswith(prefix)]

"""Per-key gauges, so that alerts can watch expiry and readiness the way
cert-manager's certificate metrics are watched.

Labelled by namespace, name and tenant: names, never refs or material. Set
from the status the operator writes; removed when the key is deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from prometheus_client import Gauge

_LABELS = ["namespace", "name", "tenant"]

KEY_READY = Gauge("keyledger_key_ready", "1 when the EncryptionKey is Ready, else 0.", _LABELS)
KEY_DRIFTED = Gauge(
    "keyledger_key_drifted", "1 when the KMS disagrees with the ledger, else 0.", _LABELS
)
KEY_PAUSED = Gauge(
    "keyledger_key_paused", "1 while keyledger.io/paused freezes the key, else 0.", _LABELS
)
KEY_VERSION = Gauge("keyledger_key_version", "The key's current version.", _LABELS)
KEY_EXPIRES = Gauge(
    "keyledger_key_expiration_timestamp_seconds",
    "When the current version expires (absent: it does not).",
    _LABELS,
)
KEY_NEXT_ROTATION = Gauge(
    "keyledger_key_next_rotation_timestamp_seconds",
    "When the key is next rotated on schedule (absent: manual rotation only).",
    _LABELS,
)
KEY_COMPROMISED_LAST_USED = Gauge(
    "keyledger_key_compromised_version_last_used_timestamp_seconds",
    "Latest client use of any of the key's COMPROMISED versions (absent: none was used). "
    "A change means a client still uses a compromised version.",
    _LABELS,
)
_ALL = (
    KEY_READY,
    KEY_DRIFTED,
    KEY_PAUSED,
    KEY_VERSION,
    KEY_EXPIRES,
    KEY_NEXT_ROTATION,
    KEY_COMPROMISED_LAST_USED,
)


def observe_key(namespace: str, name: str, tenant: str, status: Mapping[str, Any]) -> None:
    """Set the key's gauges from its status as it is after this patch."""
    labels = (namespace, name, tenant)
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    KEY_READY.labels(*labels).set(1 if conditions.get("Ready") == "True" else 0)
    KEY_DRIFTED.labels(*labels).set(1 if conditions.get("Drifted") == "True" else 0)
    KEY_PAUSED.labels(*labels).set(1 if conditions.get("Paused") == "True" else 0)
    _set_or_remove(KEY_VERSION, labels, status.get("version"))
    _set_or_remove(KEY_EXPIRES, labels, _timestamp(status.get("expiresAt")))
    _set_or_remove(KEY_NEXT_ROTATION, labels, _timestamp(status.get("nextRotationAt")))
    compromised_uses = [
        _timestamp(v.get("lastUsedAt"))
        for v in status.get("versions") or ()
        if v.get("phase") == "COMPROMISED"
    ]
    _set_or_remove(
        KEY_COMPROMISED_LAST_USED, labels, max((t for t in compromised_uses if t), default=None)
    )


def forget_key(namespace: str, name: str, tenant: str) -> None:
    for gauge in _ALL:
        _remove(gauge, (namespace, name, tenant))


def _set_or_remove(gauge: Gauge, labels: tuple[str, str, str], value: float | None) -> None:
    if value is None:
        _remove(gauge, labels)
    else:
        gauge.labels(*labels).set(value)


def _remove(gauge: Gauge, labels: tuple[str, str, str]) -> None:
    with contextlib.suppress(KeyError):  # never set: nothing to remove
        gauge.remove(*labels)


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value).timestamp()

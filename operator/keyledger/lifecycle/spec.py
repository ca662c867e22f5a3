"""An EncryptionKey's spec as a typed value, with the defaults the CRD documents."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from keyledger.domain import KeyType
from keyledger.errors import InvalidSpec
from keyledger.lifecycle.durations import parse_duration


class DesiredState(StrEnum):
    ACTIVE = "Active"
    INACTIVE = "Inactive"


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DISABLE = "Disable"
    SCHEDULE_DELETION = "ScheduleDeletion"


class ProviderKind(StrEnum):
    CLUSTER = "ClusterKeyProvider"
    NAMESPACED = "KeyProvider"


@dataclass(frozen=True)
class ProviderRef:
    kind: ProviderKind
    name: str


DEFAULT_ROLLBACK_WINDOW = timedelta(days=7)
DEFAULT_EXPIRY_WARNING = timedelta(days=14)


@dataclass(frozen=True)
class KeySpec:
    tenant: str
    key_name: str
    key_type: KeyType
    provider_ref: ProviderRef
    algorithm: str = "AES-256-GCM"
    purpose: str | None = None
    compliance_tags: Mapping[str, str] = field(default_factory=dict)
    authorized_services: tuple[str, ...] = ()
    access_policy: Mapping[str, Any] = field(default_factory=dict)
    state: DesiredState = DesiredState.ACTIVE
    rotation_period: timedelta | None = None
    rollback_window: timedelta = DEFAULT_ROLLBACK_WINDOW
    expire_after: timedelta | None = None
    expire_at: datetime | None = None
    expiry_warning: timedelta = DEFAULT_EXPIRY_WARNING
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    deletion_window_days: int = 30
    adopt_kms_key_id: str | None = None

    @classmethod
    def from_resource(cls, name: str, spec: Mapping[str, Any]) -> KeySpec:
        """Read a spec the API server already validated; re-check what it cannot."""
        try:
            ref = spec["providerRef"]
            provider_ref = ProviderRef(kind=ProviderKind(ref["kind"]), name=ref["name"])
            tenant = spec["tenant"]
            key_type = KeyType(spec["keyType"])
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidSpec(
                f"spec is missing or has an invalid {exc}; "
                "tenant, keyType and providerRef {kind, name} are required"
            ) from exc
        rotation = spec.get("rotation") or {}
        rollback = spec.get("rollback") or {}
        expiry = spec.get("expiry") or {}
        return cls(
            tenant=tenant,
            key_name=spec.get("keyName") or name,
            key_type=key_type,
            provider_ref=provider_ref,
            algorithm=spec.get("algorithm", "AES-256-GCM"),
            purpose=spec.get("purpose"),
            compliance_tags=dict(spec.get("complianceTags") or {}),
            authorized_services=tuple(spec.get("authorizedServices") or ()),
            access_policy=dict(spec.get("accessPolicy") or {}),
            state=DesiredState(spec.get("state", "Active")),
            rotation_period=_optional_duration(rotation.get("period"), "spec.rotation.period"),
            rollback_window=_optional_duration(rollback.get("window"), "spec.rollback.window")
            or DEFAULT_ROLLBACK_WINDOW,
            expire_after=_optional_duration(expiry.get("after"), "spec.expiry.after"),
            expire_at=_optional_timestamp(expiry.get("at"), "spec.expiry.at"),
            expiry_warning=_optional_duration(expiry.get("warnBefore"), "spec.expiry.warnBefore")
            or DEFAULT_EXPIRY_WARNING,
            deletion_policy=DeletionPolicy(spec.get("deletionPolicy", "Retain")),
            deletion_window_days=int(spec.get("deletionWindowDays", 30)),
            adopt_kms_key_id=(spec.get("adopt") or {}).get("kmsKeyId"),
        )

    def expiry_for(self, activated_at: datetime) -> datetime | None:
        """When a version activated at `activated_at` expires."""
        if self.expire_at is not None:
            return self.expire_at
        if self.expire_after is not None:
            return activated_at + self.expire_after
        return None


def _optional_duration(value: str | None, field_path: str) -> timedelta | None:
    return None if value is None else parse_duration(value, field_path)


def _optional_timestamp(value: str | None, field_path: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidSpec(
            f"{field_path}: {value!r} is not an RFC 3339 time, e.g. 2027-01-31T00:00:00Z"
        ) from exc
    if parsed.tzinfo is None:
        raise InvalidSpec(f"{field_path}: {value!r} needs a timezone, e.g. a trailing Z")
    return parsed

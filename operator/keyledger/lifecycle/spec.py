"""An EncryptionKey's spec as a typed value, with the defaults the CRD documents."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

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
# The CRD's bounds; each backend may narrow them (see its schedule_deletion).
DELETION_WINDOW_DAYS = range(7, 31)

_Choice = TypeVar("_Choice", bound=StrEnum)


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
        """Read a spec the API server already validated; re-check what it cannot.

        Each bad value raises InvalidSpec naming its field and what it may be:
        the spec may come from a resource written before a CRD change, or from
        a caller that bypassed the API server.
        """
        ref = spec.get("providerRef")
        if not isinstance(ref, Mapping):
            raise InvalidSpec(
                f"spec.providerRef is {_shown(ref)}: it is required, "
                "{kind: ClusterKeyProvider or KeyProvider, name: <provider name>}"
            )
        provider_ref = ProviderRef(
            kind=_choice(ProviderKind, ref.get("kind"), "spec.providerRef.kind"),
            name=_required_text(ref.get("name"), "spec.providerRef.name", "the provider's name"),
        )
        tenant = _required_text(spec.get("tenant"), "spec.tenant", "the tenant that owns the key")
        key_type = _choice(KeyType, spec.get("keyType"), "spec.keyType")
        rotation = spec.get("rotation") or {}
        rollback = spec.get("rollback") or {}
        expiry = spec.get("expiry") or {}
        period = _optional_duration(rotation.get("period"), "spec.rotation.period")
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
            state=_choice(DesiredState, spec.get("state", "Active"), "spec.state"),
            rotation_period=period,
            rollback_window=_optional_duration(rollback.get("window"), "spec.rollback.window")
            or default_rollback_window(period),
            expire_after=_optional_duration(expiry.get("after"), "spec.expiry.after"),
            expire_at=_optional_timestamp(expiry.get("at"), "spec.expiry.at"),
            expiry_warning=_optional_duration(expiry.get("warnBefore"), "spec.expiry.warnBefore")
            or DEFAULT_EXPIRY_WARNING,
            deletion_policy=_choice(
                DeletionPolicy, spec.get("deletionPolicy", "Retain"), "spec.deletionPolicy"
            ),
            deletion_window_days=_deletion_window_days(spec.get("deletionWindowDays", 30)),
            adopt_kms_key_id=(spec.get("adopt") or {}).get("kmsKeyId"),
        )

    def expiry_for(self, activated_at: datetime) -> datetime | None:
        """When a version activated at `activated_at` expires."""
        if self.expire_at is not None:
            return self.expire_at
        if self.expire_after is not None:
            return activated_at + self.expire_after
        return None


def _shown(value: object) -> str:
    return "missing" if value is None else repr(value)


def _choice(choices: type[_Choice], value: object, field_path: str) -> _Choice:
    allowed = [choice.value for choice in choices]
    if value in allowed:
        return choices(value)
    raise InvalidSpec(f"{field_path} is {_shown(value)}: use one of {', '.join(allowed)}")


def _required_text(value: object, field_path: str, what: str) -> str:
    if isinstance(value, str) and value:
        return value
    raise InvalidSpec(f"{field_path} is {_shown(value)}: it is required, {what}")


def _deletion_window_days(value: object) -> int:
    # bool is an int to Python, not to the CRD.
    if isinstance(value, int) and not isinstance(value, bool) and value in DELETION_WINDOW_DAYS:
        return value
    raise InvalidSpec(
        f"spec.deletionWindowDays is {_shown(value)}: use a whole number of days from "
        f"{DELETION_WINDOW_DAYS.start} to {DELETION_WINDOW_DAYS.stop - 1}"
    )


def default_rollback_window(rotation_period: timedelta | None) -> timedelta:
    """Seven days, or half the rotation period where that is shorter: a rollback
    returns to the previous version, which the next rotation replaces."""
    if rotation_period is None:
        return DEFAULT_ROLLBACK_WINDOW
    return min(DEFAULT_ROLLBACK_WINDOW, rotation_period / 2)


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

"""How keyledger names things in AWS KMS: aliases, tags, key ids.

`alias/keyledger/<tenant>/<keyName>` points at a key's current version;
`alias/keyledger-marker/<marker>` at the version made for an idempotency
marker. Both sit under `alias/keyledger*`, which an IAM policy can scope to.

Alias names allow only letters, digits, `/`, `_` and `-` (AWS's API pattern
also admits `:`, but AWS and moto refuse it). Tenants (DNS labels), key names
and markers never contain `/` but may contain `.`, so `.` becomes `/`:
key name `phi.v2` -> `alias/keyledger/acme/phi/v2`. The mapping is one-to-one.
"""

from __future__ import annotations

import re

from keyledger.errors import InvalidSpec
from keyledger.providers.base import KeyVersionRequest

PRIMARY_ALIAS_PREFIX = "alias/keyledger/"
MARKER_ALIAS_PREFIX = "alias/keyledger-marker/"
TAG_PREFIX = "keyledger.io/"
TENANT_TAG = f"{TAG_PREFIX}tenant"
KEY_NAME_TAG = f"{TAG_PREFIX}key-name"
VERSION_TAG = f"{TAG_PREFIX}version"
MARKER_TAG = f"{TAG_PREFIX}marker"
MAX_ALIAS_LENGTH = 256

_ALIAS_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")


def primary_alias(tenant: str, key_name: str) -> str:
    """The alias that names a tenant's current version of `key_name`."""
    alias = (
        f"{PRIMARY_ALIAS_PREFIX}{_alias_segment(tenant, 'spec.tenant')}/"
        f"{_alias_segment(key_name, 'spec.keyName')}"
    )
    if len(alias) > MAX_ALIAS_LENGTH:
        raise InvalidSpec(
            f"spec.tenant and spec.keyName make the AWS KMS alias {alias[:60]}… longer than "
            f"{MAX_ALIAS_LENGTH} characters: shorten spec.keyName",
        )
    return alias


def marker_alias(marker: str) -> str:
    """The alias that names the version created for an idempotency marker."""
    return f"{MARKER_ALIAS_PREFIX}{_alias_segment(marker, 'idempotency marker')}"


def version_tags(request: KeyVersionRequest) -> dict[str, str]:
    """The tags of a version's key: the request's labels, then ours (which win)."""
    return {
        **request.labels,
        TENANT_TAG: request.tenant,
        KEY_NAME_TAG: request.key_name,
        VERSION_TAG: str(request.version),
        MARKER_TAG: request.marker,
    }


def key_id(ref: str) -> str:
    """The bare key id of a key ARN (a bare id stays as it is).

    DisableKey, EnableKey and ScheduleKeyDeletion take it on AWS as well as the
    ARN (they work in the key's own account only); moto accepts only the id.
    """
    return ref.rsplit(":key/", 1)[-1]


def _alias_segment(value: str, field: str) -> str:
    if not _ALIAS_SEGMENT.match(value):
        raise InvalidSpec(
            f"{field} {value!r} cannot be part of an AWS KMS alias: use only letters, "
            "digits, '_', '-' and '.'",
        )
    return value.replace(".", "/")

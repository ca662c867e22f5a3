"""How keyledger names things in Azure Key Vault: key names, version refs, tags.

Key name. One Key Vault key per (tenant, keyName), its versions being the
ledger's versions. Key Vault names allow only `[0-9a-zA-Z-]`, at most 127, and
compare case-insensitively, while keyNames may hold `_`, `.` and case. So the
name is `keyledger-<tenant>-<keyName slug>-<hash>`: the slug (lower-cased,
other characters as `-`, shortened to fit) keeps it readable in the portal, and
the hash (16 hex digits of SHA-256 over tenant and the exact keyName) keeps it
unique. The tags of every version carry the real tenant and keyName.

Ref. The versioned key id Key Vault returns, `https://<vault>/keys/<name>/<version>`:
it names exactly one version, which the ledger pins.

Tags (per version in Key Vault): tenant, key name, version number, the
idempotency marker and, once deletion is scheduled, the date after which the
version may be destroyed. Names use `-` only: Key Vault tags are plain strings.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from keyledger.errors import InvalidSpec, KmsKeyNotFound
from keyledger.providers.base import KeyVersionRequest

KEY_PREFIX = "keyledger-"
MAX_KEY_NAME_LENGTH = 127
TAG_PREFIX = "keyledger-"
MANAGED_BY_TAG = f"{TAG_PREFIX}managed-by"
TENANT_TAG = f"{TAG_PREFIX}tenant"
KEY_NAME_TAG = f"{TAG_PREFIX}key-name"
VERSION_TAG = f"{TAG_PREFIX}version"
MARKER_TAG = f"{TAG_PREFIX}marker"
DELETE_AFTER_TAG = f"{TAG_PREFIX}delete-after"
# Key Vault accepts at most 15 tags per version; ours take 6 of them.
MAX_TAGS = 15

_TENANT = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_HASH_LENGTH = 16
_REF_PATH = re.compile(r"^/keys/(?P<name>[0-9A-Za-z-]{1,127})/(?P<version>[0-9A-Za-z]{1,64})$")
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def vault_key_name(tenant: str, key_name: str) -> str:
    """The Key Vault key that holds every version of a tenant's `key_name`."""
    if not _TENANT.match(tenant) or not _KEY_NAME.match(key_name):
        raise InvalidSpec(
            f"tenant {tenant!r} / keyName {key_name!r} cannot name an Azure Key Vault key: "
            "tenant must be a DNS label, keyName letters, digits, '_', '.', '-'"
        )
    digest = hashlib.sha256(f"{tenant}\n{key_name}".encode()).hexdigest()[:_HASH_LENGTH]
    room = MAX_KEY_NAME_LENGTH - len(KEY_PREFIX) - len(tenant) - len(digest) - 2
    slug = _NOT_SLUG.sub("-", key_name.lower()).strip("-")[:room].strip("-") or "key"
    return f"{KEY_PREFIX}{tenant}-{slug}-{digest}"


def version_tags(request: KeyVersionRequest) -> dict[str, str]:
    """The tags of a new version: the request's labels, then ours (which win)."""
    ours = {
        MANAGED_BY_TAG: "keyledger",
        TENANT_TAG: request.tenant,
        KEY_NAME_TAG: request.key_name,
        VERSION_TAG: str(request.version),
        MARKER_TAG: request.marker,
    }
    labels = {k: v for k, v in request.labels.items() if k not in ours}
    # Leave room for DELETE_AFTER_TAG; labels are informative, ours are not.
    room = MAX_TAGS - len(ours) - 1
    return {**dict(sorted(labels.items())[:room]), **ours}


def scheduled_for_deletion(tags: Mapping[str, str] | None) -> bool:
    return DELETE_AFTER_TAG in (tags or {})


def deletion_date(tags: Mapping[str, str] | None) -> datetime | None:
    """When a version scheduled for deletion may be destroyed (None: not scheduled, or
    the tag was edited into something that is not a date)."""
    try:
        return datetime.strptime((tags or {})[DELETE_AFTER_TAG], _DATE_FORMAT).replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return None


def deletion_tag_value(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_DATE_FORMAT)


def normalized_vault_url(url: str) -> str:
    """`https://host[:port]` in lower case, without a default port or trailing slash."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = f":{parts.port}" if parts.port not in (None, 443) else ""
    return f"{parts.scheme.lower()}://{host}{port}"


@dataclass(frozen=True)
class KeyVersionId:
    """Version `version` of key `name` in the vault at `vault_url`."""

    vault_url: str
    name: str
    version: str

    @property
    def ref(self) -> str:
        return f"{self.vault_url}/keys/{self.name}/{self.version}"

    @classmethod
    def parse(cls, ref: str, vault_url: str) -> KeyVersionId:
        """The version `ref` names, which must be a versioned key id in `vault_url`."""
        parts = urlsplit(ref)
        match = _REF_PATH.match(parts.path)
        if (
            match is None
            or parts.query
            or parts.fragment
            or normalized_vault_url(ref) != normalized_vault_url(vault_url)
        ):
            raise KmsKeyNotFound(
                f"{ref} is not a versioned key id (https://<vault>/keys/<name>/<version>) "
                f"in the vault {vault_url}"
            )
        return cls(f"{parts.scheme}://{parts.netloc}", match["name"], match["version"])

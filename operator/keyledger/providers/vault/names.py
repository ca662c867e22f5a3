"""How keyledger names things in Vault transit: key names and version refs.

Transit key: `keyledger.<tenant>.<keyName>`, plus a trailing `_` when keyName
ends in `_`, `.` or `-`. Transit names must start and end with a letter, digit
or `_` and may not contain `/`; adding the `_` only in that case keeps the
mapping one-to-one (names ending in a letter or digit never get one), and the
tenant, a DNS label, has no dots, so the first dot after the prefix ends it.

Ref: `vault:<transit mount>/<transit key>#<version>`, e.g.
`vault:transit/keyledger.acme.phi_encryption_key#3`. Key names have no `/`, so
the last `/` separates the mount (which may have several segments) from the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keyledger.errors import InvalidSpec, KmsKeyNotFound

KEY_PREFIX = "keyledger."
# Never a real key name: those have a second dot (keyledger.<tenant>.<keyName>).
PROBE_KEY = f"{KEY_PREFIX}check"

_TENANT = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_REF = re.compile(r"^vault:(?P<mount>.+)/(?P<key>[A-Za-z0-9_.-]+)#(?P<version>[1-9][0-9]*)$")


def transit_key_name(tenant: str, key_name: str) -> str:
    if not _TENANT.match(tenant) or not _KEY_NAME.match(key_name):
        raise InvalidSpec(
            f"tenant {tenant!r} / keyName {key_name!r} cannot name a transit key: tenant must "
            "be a DNS label, keyName letters, digits, '_', '.', '-'"
        )
    terminator = "" if key_name[-1].isalnum() else "_"
    return f"{KEY_PREFIX}{tenant}.{key_name}{terminator}"


@dataclass(frozen=True)
class TransitVersion:
    """Version `version` of transit key `key` on `mount`."""

    mount: str
    key: str
    version: int

    @property
    def ref(self) -> str:
        return f"vault:{self.mount}/{self.key}#{self.version}"

    @classmethod
    def parse(cls, ref: str, mount: str) -> TransitVersion:
        """The version `ref` names, which must be on `mount`."""
        match = _REF.match(ref)
        if match is None or match["mount"] != mount:
            raise KmsKeyNotFound(f"{ref} is not a version of a key on transit mount {mount}")
        return cls(match["mount"], match["key"], int(match["version"]))

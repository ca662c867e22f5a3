"""How keyledger names key versions in a PKCS#11 token: labels, ids, references, records.

All versions of a tenant's key share CKA_LABEL `keyledger/<tenant>/<keyName>`;
CKA_ID is the version as 4 bytes, big-endian. A version's reference is the
RFC 7512 URI naming that pair. Marker and deletion records (see `objects`) are
told apart from other data objects by their CKA_APPLICATION.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from keyledger.errors import KmsKeyNotFound, ProviderError

MARKER_APPLICATION = "keyledger.io/version-marker"
DELETION_APPLICATION = "keyledger.io/scheduled-deletion"
LABEL_PREFIX = "keyledger"
MAX_REF_LENGTH = 512  # encryption_keys.kms_key_id
_ID_BYTES = 4
# Characters RFC 7512 allows unescaped in a pk11-path attribute value.
_PATH_SAFE = ":[]@!$'()*+,="


@dataclass(frozen=True)
class VersionRef:
    """A key version in a token: the token label, the key's CKA_LABEL and CKA_ID."""

    token: str
    label: str
    version: int

    @property
    def key_id(self) -> bytes:
        return self.version.to_bytes(_ID_BYTES, "big")

    @property
    def uri(self) -> str:
        key_id = "".join(f"%{byte:02X}" for byte in self.key_id)
        return (
            f"pkcs11:token={quote(self.token, safe=_PATH_SAFE)};"
            f"object={quote(self.label, safe=_PATH_SAFE)};id={key_id};type=secret-key"
        )

    @classmethod
    def parse(cls, uri: str, token: str) -> VersionRef:
        """The version `uri` names; KmsKeyNotFound unless it is a key version of `token`."""
        scheme, _, path = uri.partition(":")
        attributes = dict(part.partition("=")[::2] for part in path.split("?")[0].split(";"))
        values = {name: unquote(value) for name, value in attributes.items()}
        key_id = unquote(attributes.get("id", ""), encoding="latin-1").encode("latin-1")
        if (
            scheme != "pkcs11"
            or values.get("type") != "secret-key"
            or not values.get("object")
            or len(key_id) != _ID_BYTES
        ):
            raise KmsKeyNotFound(
                f"{uri!r} is not a keyledger PKCS#11 key version reference "
                "(pkcs11:token=..;object=..;id=<4 bytes>;type=secret-key)"
            )
        if values.get("token") != token:
            raise KmsKeyNotFound(
                f"{uri} names token {values.get('token')!r}, but this provider uses token {token!r}"
            )
        return cls(token=token, label=values["object"], version=int.from_bytes(key_id, "big"))


def version_ref(token: str, tenant: str, key_name: str, version: int) -> VersionRef:
    if not 0 < version < 2 ** (8 * _ID_BYTES):
        raise ProviderError(f"version {version} of {tenant}/{key_name} does not fit CKA_ID")
    ref = VersionRef(token=token, label=f"{LABEL_PREFIX}/{tenant}/{key_name}", version=version)
    if len(ref.uri) > MAX_REF_LENGTH:
        raise ProviderError(
            f"the PKCS#11 reference of {tenant}/{key_name} would exceed {MAX_REF_LENGTH} "
            "characters; use a shorter keyName or token label"
        )
    return ref

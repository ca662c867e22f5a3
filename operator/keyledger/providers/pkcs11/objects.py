"""How keyledger lays out key versions in a PKCS#11 token, and how it finds them.

One AES-256 secret key object per version, labelled and numbered as `names`
says (CKA_LABEL `keyledger/<tenant>/<keyName>`, CKA_ID = the version).

Two kinds of private data objects (CKO_DATA) carry what a secret key object
cannot hold:

- a *marker record* per version (CKA_APPLICATION `keyledger.io/version-marker`,
  CKA_LABEL = idempotency marker, CKA_VALUE = the version's reference). Secret
  key objects have no free-form attribute to hold the marker, and the label and
  id are taken by the version scheme; the record is written before the key, so
  a crash in between leaves a record that the retry completes.
- a *deletion record* per version scheduled for deletion (CKA_APPLICATION
  `keyledger.io/scheduled-deletion`, CKA_LABEL = reference, CKA_VALUE = ISO
  date). CKA_END_DATE would be the natural place, but SoftHSM 2.6 stores dates
  of private objects unencrypted and then fails to read them back
  (CKR_GENERAL_ERROR), and public keys would be usable without a login.
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

from pkcs11 import Attribute, Mechanism, ObjectClass, SecretKey, Session
from pkcs11.attributes import AttributeMapper
from pkcs11.types import Object

from keyledger.errors import ProviderError
from keyledger.providers.pkcs11.names import DELETION_APPLICATION, MARKER_APPLICATION, VersionRef


def attribute_mapper() -> AttributeMapper:
    """python-pkcs11's mapper, taught CKA_ALLOWED_MECHANISMS (an array of CK_MECHANISM_TYPE)."""
    mapper = AttributeMapper()
    mapper.register_handler(
        Attribute.ALLOWED_MECHANISMS,
        lambda mechanisms: b"".join(struct.pack("L", int(m)) for m in mechanisms),
        lambda raw: [Mechanism(value) for (value,) in struct.iter_unpack("L", raw)],
    )
    return mapper


# The version key: in the token, never extractable, only for AES-GCM encrypt/decrypt.
# MODIFIABLE stays true because disable/enable flip CKA_ENCRYPT and CKA_DECRYPT.
VERSION_KEY_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: True,
    Attribute.COPYABLE: False,
    Attribute.DESTROYABLE: True,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
    Attribute.ALLOWED_MECHANISMS: [Mechanism.AES_GCM],
}
# Every usage attribute disable turns off (WRAP/UNWRAP too, in case someone turned them on).
USAGE_ATTRIBUTES = (Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.WRAP, Attribute.UNWRAP)
# What enable turns back on: only what keyledger uses.
ENABLED_USAGE = (Attribute.ENCRYPT, Attribute.DECRYPT)


def _record(application: str, label: str, value: bytes) -> dict[Attribute, Any]:
    return {
        Attribute.CLASS: ObjectClass.DATA,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.MODIFIABLE: False,
        Attribute.APPLICATION: application,
        Attribute.LABEL: label,
        Attribute.VALUE: value,
    }


def marker_record(marker: str, ref: VersionRef) -> dict[Attribute, Any]:
    return _record(MARKER_APPLICATION, marker, ref.uri.encode())


def deletion_record(ref: VersionRef, when: datetime) -> dict[Attribute, Any]:
    return _record(DELETION_APPLICATION, ref.uri, when.isoformat().encode())


# Searches always drain the iterator: an unfinished C_FindObjects would be
# finalised later by the garbage collector, outside the session lock.


def find_version_key(session: Session, ref: VersionRef) -> SecretKey | None:
    found = _find(
        session,
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.LABEL: ref.label,
            Attribute.ID: ref.key_id,
        },
        what=ref.uri,
    )
    if found is not None and not isinstance(found, SecretKey):
        raise ProviderError(f"{ref.uri} is not an AES secret key", reason="KmsKeyAmbiguous")
    return found


def find_marker_record(session: Session, marker: str) -> str | None:
    """The reference recorded for `marker`, if a record exists."""
    found = _find(
        session,
        {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.APPLICATION: MARKER_APPLICATION,
            Attribute.LABEL: marker,
        },
        what=f"marker {marker}",
    )
    return None if found is None else bytes(found[Attribute.VALUE]).decode()


def find_marker_of(session: Session, ref: VersionRef) -> str | None:
    """The marker whose record names `ref`, if any."""
    found = _marker_record_of(session, ref)
    return None if found is None else str(found[Attribute.LABEL])


def find_deletion_date(session: Session, ref: VersionRef) -> datetime | None:
    found = _deletion_record_of(session, ref)
    return None if found is None else _recorded_date(found)


def find_scheduled_deletions(session: Session) -> list[tuple[str, datetime]]:
    """Every version the token holds a deletion record for: its reference and date."""
    records: list[Object] = list(
        session.get_objects(
            {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: DELETION_APPLICATION}
        )
    )
    return [(str(record[Attribute.LABEL]), _recorded_date(record)) for record in records]


def destroy_version(session: Session, ref: VersionRef) -> None:
    """Destroy the version's key object, its marker record and its deletion record.

    Objects already gone are skipped, so a retry finishes what a crash left.
    The deletion record goes last: while it exists, the version is still due.
    """
    objects = (
        find_version_key(session, ref),
        _marker_record_of(session, ref),
        _deletion_record_of(session, ref),
    )
    for found in objects:
        if found is not None:
            found.destroy()


def _marker_record_of(session: Session, ref: VersionRef) -> Object | None:
    return _find(
        session,
        {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.APPLICATION: MARKER_APPLICATION,
            Attribute.VALUE: ref.uri.encode(),
        },
        what=f"the marker of {ref.uri}",
    )


def _deletion_record_of(session: Session, ref: VersionRef) -> Object | None:
    return _find(
        session,
        {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.APPLICATION: DELETION_APPLICATION,
            Attribute.LABEL: ref.uri,
        },
        what=f"the deletion record of {ref.uri}",
    )


def _recorded_date(record: Object) -> datetime:
    return datetime.fromisoformat(bytes(record[Attribute.VALUE]).decode())


def _find(session: Session, template: dict[Attribute, Any], *, what: str) -> Object | None:
    found: list[Object] = list(session.get_objects(template))
    if len(found) > 1:
        raise ProviderError(
            f"token holds {len(found)} objects for {what}; keyledger expects one. "
            "Remove the duplicates made outside keyledger",
            reason="KmsKeyAmbiguous",
        )
    return found[0] if found else None

"""The EncryptionKey and its ledger history as operations see them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Row

from keyledger.lifecycle.actions import HandledRequest, RequestKind
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.versions import KeyVersion
from keyledger.store.models import EncryptionKeyRecord

Clock = Callable[[], datetime]
_VERSION_FIELDS = tuple(f.name for f in fields(KeyVersion))
_new = object.__new__


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyResource:
    """The EncryptionKey being reconciled, reduced to what operations need."""

    uid: str
    namespace: str
    name: str
    generation: int | None
    spec: KeySpec
    annotations: Mapping[str, str]
    # sha256 of the spec as the API server holds it: the requester record names it.
    spec_digest: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}/{self.name}"


def to_version(record: EncryptionKeyRecord | Row[*tuple[Any, ...]]) -> KeyVersion:
    """A version from its ledger record, or from a row of the pass's live-version read."""
    if isinstance(record, Row):
        # Its first columns are KeyVersion's fields, in order (then the managing
        # resource, and more): a pass makes these for every version it shows, so by
        # position, into the instance's dict. The frozen dataclass's __init__ sets
        # each field through object.__setattr__: twice the time, 0.7 us a version.
        version = _new(KeyVersion)
        # zip stops at the last field (more columns follow); a keyword argument to it
        # costs a quarter of the rest.
        version.__dict__.update(zip(_VERSION_FIELDS, record))  # noqa: B905
        return version
    return KeyVersion(
        id=record.id,
        version=record.version,
        status=record.status,
        kms_key_id=record.kms_key_id,
        activated_at=record.activated_at,
        expires_at=record.expires_at,
        rotated_at=record.rotated_at,
        last_used_at=record.last_used_at,
        can_rollback=record.can_rollback,
        rollback_expires_at=record.rollback_expires_at,
        parent_id=record.parent_key_id,
        created_by=record.created_by,
    )


@dataclass(frozen=True)
class Written:
    """What one action's ledger step wrote: the versions it added or changed, as
    committed, and the request it settled."""

    versions: list[KeyVersion]
    settled: HandledRequest | None = None


@dataclass(frozen=True)
class LedgerView:
    versions: list[KeyVersion]
    handled: dict[RequestKind, set[str]]
    last_handled: dict[str, str]
    # The resource the ledger says manages the key (its newest version's), if any.
    owner: str | None = None

    def after(self, written: Written) -> LedgerView:
        """The view once `written` is committed, without reading the ledger again:
        the pass holds the key's lock, and a version someone else moved meanwhile
        fails the next action's ledger step (LedgerConflict), as a fresh read would
        have shown. Versions newest first, as the ledger read returns them."""
        changed = {v.id: v for v in written.versions}
        versions = [changed.pop(v.id, v) for v in self.versions]
        versions = sorted([*versions, *changed.values()], key=lambda v: v.version, reverse=True)
        handled = {kind: set(tokens) for kind, tokens in self.handled.items()}
        last_handled = dict(self.last_handled)
        if written.settled is not None:
            handled.setdefault(written.settled.kind, set()).add(written.settled.token)
            last_handled[written.settled.kind.value] = written.settled.token
        return LedgerView(versions, handled, last_handled, self.owner)

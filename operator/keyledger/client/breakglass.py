"""Break glass: opening data under a COMPROMISED version, on purpose and on the record.

A compromised version stays refused unless the caller says who they are and
why (an incident, a re-encryption after the compromise). Every such open writes
a BREAK_GLASS_OPENED row to the audit trail *before* the data key is unwrapped;
when that row cannot be written, nothing is opened.

Break glass lifts keyledger's refusal, not the KMS's: the compromise disabled
the version in the KMS too, and whoever administers the KMS decides whether to
enable it for the length of the re-encryption.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyEventType
from keyledger.errors import KeyNotUsable
from keyledger.store.repository import KeyLedger, Transition


@dataclass(frozen=True)
class BreakGlass:
    """`actor`: the person or job accountable (e.g. an SSO user); `reason`: why, e.g.
    the incident ticket. Both go to the audit trail, with the process's own identity."""

    actor: str
    reason: str

    def __post_init__(self) -> None:
        if not self.actor.strip() or not self.reason.strip():
            raise ValueError("break glass needs the actor and a reason, both non-empty")


def record_break_glass(
    sessions: sessionmaker[Session],
    key_id: uuid.UUID,
    tenant: str,
    glass: BreakGlass,
    *,
    service: str | None,
    header: bytes,
) -> None:
    """Write the audit row in its own transaction; raises when it cannot."""
    with sessions.begin() as session:
        ledger = KeyLedger(session)
        ledger.scope_to_tenant(tenant)
        record = ledger.get(key_id)
        if record is None:
            raise KeyNotUsable(f"key version {key_id} left the ledger")
        details: dict[str, Any] = {
            "breakGlass": True,
            "service": service,
            # Where the open happened, as the process sees itself and as the
            # database sees the connection (which a caller cannot choose freely).
            "processUser": _process_user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "ledgerRole": _ledger_role(session),
            # Which ciphertext: a digest of its header (the key id and the wrapped data
            # key, itself ciphertext), enough to match it, nothing to open it with.
            "ciphertext": hashlib.sha256(header).hexdigest()[:32],
        }
        ledger.record_event(
            record,
            KeyEventType.BREAK_GLASS_OPENED,
            from_status=record.status,
            to_status=record.status,
            now=datetime.now(UTC),
            why=Transition(actor=glass.actor, reason=glass.reason),
            details=details,
        )


def _process_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _ledger_role(session: Session) -> str | None:
    if session.get_bind().dialect.name != "postgresql":
        return None
    return session.execute(text("SELECT current_user")).scalar_one_or_none()

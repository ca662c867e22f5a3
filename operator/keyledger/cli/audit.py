"""`keyledger audit verify|export`: check the audit trail's hash chains; ship it to a SIEM."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TextIO

from keyledger.errors import InvalidSpec
from keyledger.lifecycle.durations import parse_duration
from keyledger.settings import get_settings
from keyledger.store.audit import describe, export_events, verify_chains
from keyledger.store.engine import make_engine, make_session_factory

EXIT_BROKEN = 3


def verify(tenant: str | None, out: TextIO | None = None) -> int:
    """One line per tenant; exit 0 when every chain holds, EXIT_BROKEN when one does not."""
    out = out or sys.stdout
    engine = make_engine(get_settings().ledger_url())
    try:
        with make_session_factory(engine)() as session:
            results = verify_chains(session, tenant)
    finally:
        engine.dispose()
    if not results:
        print(f"no audit rows{f' of tenant {tenant!r}' if tenant else ''} in the ledger", file=out)
        return 0 if tenant is None else 1
    for line in describe(results):
        print(line, file=out)
    return 0 if all(result.intact for result in results) else EXIT_BROKEN


def export(tenant: str | None, since: str | None, out: TextIO | None = None) -> int:
    """The audit rows as JSON lines, oldest first, hashes included."""
    out = out or sys.stdout
    start = parse_since(since, datetime.now(UTC)) if since else None
    engine = make_engine(get_settings().ledger_url())
    try:
        with make_session_factory(engine)() as session:
            for record in export_events(session, tenant=tenant, since=start):
                out.write(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")
    finally:
        engine.dispose()
    return 0


def parse_since(value: str, now: datetime) -> datetime:
    """An RFC 3339 time, or a duration back from now (`24h`, `7d`)."""
    try:
        return now - parse_duration(value, "--since")
    except InvalidSpec:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(
            f"keyledger audit export: --since {value!r} is neither a time "
            "(2026-11-29T00:00:00Z) nor a duration back from now (24h, 7d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

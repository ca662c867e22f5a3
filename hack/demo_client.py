"""`make demo`'s last step: what a records service does with the keys shown above.

Encrypts a sample PHI record with tenant acme's ACTIVE version of
phi_encryption_key and reads it back, through keyledger.client, the demo's
SQLite ledger and the dev-only local keystore the operator writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from keyledger.client import KeyledgerClient
from keyledger.client.envelope import parse
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, make_session_factory
from keyledger.store.repository import KeyLedger


def main(data_dir: Path) -> int:
    sessions = make_session_factory(make_engine(f"sqlite:///{data_dir / 'ledger.db'}"))
    keystore = LocalBackend(data_dir / "local-keystores" / "demo.json")
    record = b'{"patient": "P-0042", "note": "penicillin allergy"}'
    context = {"table": "clinical_notes", "row": "42"}
    with KeyledgerClient(sessions, [keystore]) as client:
        blob = client.encrypt("acme", "phi_encryption_key", record, context)
        assert client.decrypt(blob, context, tenant="acme") == record
    with sessions() as session:
        version = KeyLedger(session).get(parse(blob).key_id)
    assert version is not None
    print(
        f"client: encrypted a {len(record)}-byte PHI record for acme/phi_encryption_key "
        f"(v{version.version}, {len(blob)} bytes with the envelope) and read it back"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

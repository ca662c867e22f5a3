"""`keyledger encrypt|decrypt|rewrap` as a backup script or a re-encryption job runs them:
real processes, a migrated SQLite ledger, the dev-only local backend as the KMS."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from keyledger.api import COMPROMISED_REQUESTED_AT, ROTATE_REQUESTED_AT
from keyledger.client import KeyledgerClient
from keyledger.client.envelope import parse
from keyledger.domain import KeyEventType, KeyStatus
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from keyledger.store.repository import KeyLedger

REPO_ROOT = Path(__file__).resolve().parents[2]
GLASS = ["--break-glass-actor", "alice@security.example", "--break-glass-reason", "INC-42"]


@dataclass
class Setup:
    workdir: Path
    env: dict[str, str]
    sessions: sessionmaker[Session]
    backend: LocalBackend
    operations: KeyOperations
    key: KeyResource
    kms: Path

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keyledger.cli.main", *args],
            env={**self.env, **env},
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def compromise(self) -> None:
        self._request({COMPROMISED_REQUESTED_AT: "inc-42"})

    def rotate(self) -> None:
        self._request({ROTATE_REQUESTED_AT: "scheduled"})

    def _request(self, annotations: dict[str, str]) -> None:
        self.key = KeyResource(
            self.key.uid, self.key.namespace, self.key.name, 2, self.key.spec, annotations
        )
        self.operations.reconcile(self.key, self.backend, "local")

    def version(self, status: KeyStatus) -> tuple[uuid.UUID, str]:
        with self.sessions() as session:
            for record in KeyLedger(session).versions("acme", "records"):
                if record.status is status and record.kms_key_id is not None:
                    return record.id, record.kms_key_id
        raise AssertionError(f"no {status} version")


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_database(url)
    keystores = tmp_path / "keystores"
    sessions = make_session_factory(make_engine(url))
    backend = LocalBackend(keystores / "clinic.json")
    spec = KeySpec.from_resource(
        "records",
        {
            "tenant": "acme",
            "keyType": "BACKUP",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "clinic"},
        },
    )
    key = KeyResource(str(uuid.uuid4()), "acme", "records", 1, spec, {})
    operations = KeyOperations(sessions, actor="test")
    operations.reconcile(key, backend, "local")
    kms = tmp_path / "kms.yaml"
    kms.write_text(
        "apiVersion: keyledger.io/v1alpha1\nkind: ClusterKeyProvider\n"
        "metadata: {name: clinic}\nspec: {local: {keystore: clinic}}\n"
    )
    env = {
        **os.environ,
        "KEYLEDGER_DATABASE_URL": url,
        "KEYLEDGER_LOCAL_KEYSTORE_DIR": str(keystores),
        "PYTHONPATH": str(REPO_ROOT / "operator"),
    }
    env.pop("KEYLEDGER_FAILPOINTS", None)
    return Setup(tmp_path, env, sessions, backend, operations, key, kms)


def test_encrypt_and_decrypt_a_backup(setup: Setup) -> None:
    dump = setup.workdir / "dump.sql"
    dump.write_bytes(os.urandom(3 << 20) + b"-- end of dump\n")
    kms = ["--kms", str(setup.kms)]
    sealed = setup.cli(
        "encrypt", "--tenant", "acme", "--key", "records", "--in", "dump.sql",
        "--out", "dump.kle", "--context", "dump=2026-11-29", *kms,
    )  # fmt: skip
    assert sealed.returncode == 0, sealed.stderr
    assert dump.read_bytes()[:4096] not in (setup.workdir / "dump.kle").read_bytes()

    opened = setup.cli(
        "decrypt", "--tenant", "acme", "--in", "dump.kle", "--out", "restored.sql",
        "--context", "dump=2026-11-29", *kms,
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    assert (setup.workdir / "restored.sql").read_bytes() == dump.read_bytes()

    # Another tenant's restore job: refused, by name, and no file left behind.
    wrong = setup.cli(
        "decrypt", "--tenant", "globex", "--in", "dump.kle", "--out", "stolen.sql",
        "--context", "dump=2026-11-29", *kms,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "TenantMismatch" in wrong.stderr and "'acme'" in wrong.stderr
    assert not (setup.workdir / "stolen.sql").exists()
    assert not list(setup.workdir.glob(".stolen.sql*"))

    # Cut short (a copy that stopped half-way): refused, nothing kept.
    sealed_bytes = (setup.workdir / "dump.kle").read_bytes()
    (setup.workdir / "cut.kle").write_bytes(sealed_bytes[: len(sealed_bytes) // 2])
    cut = setup.cli(
        "decrypt", "--tenant", "acme", "--in", "cut.kle", "--out", "cut.sql",
        "--context", "dump=2026-11-29", *kms,
    )  # fmt: skip
    assert cut.returncode == 1 and "StreamTruncated" in cut.stderr
    assert not (setup.workdir / "cut.sql").exists()


def test_rewrap_across_a_compromise_interrupted_and_resumed(setup: Setup) -> None:
    blobs = setup.workdir / "blobs"
    blobs.mkdir()
    context = {"batch": "b1"}
    with KeyledgerClient(setup.sessions, [setup.backend]) as client:
        for n in range(12):
            blob = client.encrypt("acme", "records", f"record {n}".encode(), context)
            (blobs / f"r{n:02}.kle").write_bytes(blob)
    files = sorted(str(p) for p in blobs.iterdir())
    leaked_id, leaked_ref = setup.version(KeyStatus.ACTIVE)
    setup.compromise()
    current_id, _ = setup.version(KeyStatus.ACTIVE)
    assert current_id != leaked_id
    rewrap = [
        "rewrap", "--tenant", "acme", "--kms", str(setup.kms), "--context", "batch=b1",
        "--journal", "rewrap.journal", "--files", *files,
    ]  # fmt: skip

    # Without a break glass the compromised version is refused, and that is recorded.
    refused = setup.cli(*rewrap)
    assert refused.returncode == 1 and "VersionCompromised" in refused.stderr

    setup.backend.enable(leaked_ref)  # the KMS administrator's part of the break glass
    try:
        first = setup.cli(*rewrap, *GLASS, "--max-items", "4")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["rewrapped"] == 4
        assert "rewrap: {" in first.stderr  # progress
        crashed = setup.cli(*rewrap, *GLASS, KEYLEDGER_FAILPOINTS="rewrap.after-replace")
        assert crashed.returncode == -9  # killed after re-sealing a file, before journaling it
        last = setup.cli(*rewrap, *GLASS)
        assert last.returncode == 0, last.stderr
    finally:
        setup.backend.disable(leaked_ref)
    done_at = datetime.now(UTC)
    summary = json.loads(last.stdout)
    assert summary == {
        "seen": 8,
        "rewrapped": 7,
        "alreadyCurrent": 1,  # the one the crash re-sealed
        "doneBefore": 4,
        "failed": 0,
        "failedItems": {},
    }

    # Nothing is left under the compromised version, and everything still opens.
    with KeyledgerClient(setup.sessions, [setup.backend], usage_flush_s=0) as service:
        for n, path in enumerate(files):
            stored = Path(path).read_bytes()
            assert parse(stored).key_id == current_id
            assert service.decrypt(stored, context, tenant="acme") == f"record {n}".encode()
        service.encrypt("acme", "records", b"new data", context)

    with setup.sessions() as session:
        ledger = KeyLedger(session)
        leaked = ledger.get(leaked_id)
        assert leaked is not None and leaked.last_refused_at is not None
        # Unused since the re-encryption: the service's later work went to the new version.
        unused_since = ledger.last_needed_at(leaked_id)
        assert unused_since is not None and unused_since <= done_at
        current_use = ledger.last_needed_at(current_id)
        assert current_use is not None and current_use > done_at
        glass = [
            e for e in ledger.events(leaked_id) if e.event_type is KeyEventType.BREAK_GLASS_OPENED
        ]
    # Every break-glass open audited: 4 + 1 (crashed) + 7; the current one was not opened.
    assert len(glass) == 12
    assert {(e.actor, e.reason) for e in glass} == {("alice@security.example", "INC-42")}

    # What an operator reads before destroying the version.
    listed = setup.cli("versions", "acme", "records")
    assert listed.returncode == 0, listed.stderr
    by_id = {row["keyId"]: row for row in map(json.loads, listed.stdout.splitlines())}
    compromised = by_id[str(leaked_id)]
    assert compromised["status"] == "COMPROMISED"
    assert compromised["lastRefusedAt"] is not None
    assert datetime.fromisoformat(compromised["lastNeededAt"]) == unused_since


def test_rewrap_a_table_with_per_row_contexts(setup: Setup) -> None:
    app = f"sqlite:///{setup.workdir / 'app.db'}"
    engine = make_engine(app)
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE notes (record INTEGER PRIMARY KEY, ciphertext BLOB NOT NULL)")
        )
    with KeyledgerClient(setup.sessions, [setup.backend]) as client, engine.begin() as connection:
        for record in range(1, 8):
            blob = client.encrypt("acme", "records", b"note %d" % record, {"record": str(record)})
            connection.execute(
                text("INSERT INTO notes VALUES (:record, :blob)"), {"record": record, "blob": blob}
            )
    leaked_id, leaked_ref = setup.version(KeyStatus.ACTIVE)
    setup.compromise()
    current_id, _ = setup.version(KeyStatus.ACTIVE)

    setup.backend.enable(leaked_ref)
    try:
        done = setup.cli(
            "rewrap", "--tenant", "acme", "--kms", str(setup.kms), "--journal", "notes.journal",
            "--table", "notes", "--database-url", app, "--id-column", "record",
            "--context-column", "record", *GLASS,
        )  # fmt: skip
    finally:
        setup.backend.disable(leaked_ref)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rewrapped"] == 7

    with KeyledgerClient(setup.sessions, [setup.backend]) as client, engine.connect() as connection:
        for record, blob in connection.execute(text("SELECT record, ciphertext FROM notes")):
            assert parse(blob).key_id == current_id != leaked_id
            opened = client.decrypt(blob, {"record": str(record)}, tenant="acme")
            assert opened == b"note %d" % record
    engine.dispose()


def test_rewrap_files_holding_backups_and_records(setup: Setup) -> None:
    kms = ["--kms", str(setup.kms)]
    dumps = {name: os.urandom(2 << 20) for name in ("mon.sql", "tue.sql")}
    for name, content in dumps.items():
        (setup.workdir / name).write_bytes(content)
        sealed = setup.cli(
            "encrypt", "--tenant", "acme", "--key", "records", "--in", name,
            "--out", f"{name}.kle", "--context", "batch=b1", *kms,
        )  # fmt: skip
        assert sealed.returncode == 0, sealed.stderr
    with KeyledgerClient(setup.sessions, [setup.backend]) as client:
        record = client.encrypt("acme", "records", b"one record", {"batch": "b1"})
    (setup.workdir / "record.kle").write_bytes(record)
    leaked_id, leaked_ref = setup.version(KeyStatus.ACTIVE)
    setup.compromise()
    current_id, _ = setup.version(KeyStatus.ACTIVE)

    files = [str(setup.workdir / n) for n in ("mon.sql.kle", "tue.sql.kle", "record.kle")]
    setup.backend.enable(leaked_ref)
    try:
        done = setup.cli(
            "rewrap", "--tenant", "acme", "--context", "batch=b1", "--journal", "j",
            "--files", *files, *kms, *GLASS,
        )  # fmt: skip
    finally:
        setup.backend.disable(leaked_ref)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rewrapped"] == 3
    assert not list(setup.workdir.glob(".*.rewrap"))

    for name, content in dumps.items():
        sealed_bytes = (setup.workdir / f"{name}.kle").read_bytes()
        assert uuid.UUID(bytes=sealed_bytes[4:20]) == current_id != leaked_id
        opened = setup.cli(
            "decrypt", "--tenant", "acme", "--in", f"{name}.kle", "--out", f"{name}.back",
            "--context", "batch=b1", *kms,
        )  # fmt: skip
        assert opened.returncode == 0, opened.stderr
        assert (setup.workdir / f"{name}.back").read_bytes() == content
    assert parse((setup.workdir / "record.kle").read_bytes()).key_id == current_id


def test_rewrap_over_the_callers_own_iterator(setup: Setup) -> None:
    with KeyledgerClient(setup.sessions, [setup.backend]) as client:
        documents = {
            name: client.encrypt("acme", "records", name.encode(), {"app": "docs", "doc": name})
            for name in ("a", "b", "c")
        }
    store = setup.workdir / "documents.json"
    store.write_text(json.dumps({k: base64.b64encode(v).decode() for k, v in documents.items()}))
    setup.rotate()
    current_id, _ = setup.version(KeyStatus.ACTIVE)

    done = setup.cli(
        "rewrap", "--tenant", "acme", "--kms", str(setup.kms), "--journal", "docs.journal",
        "--context", "app=docs", "--source", "tests.integration.rewrap_source_example:documents",
        PYTHONPATH=f"{REPO_ROOT / 'operator'}:{REPO_ROOT}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rewrapped"] == 3
    stored = {k: base64.b64decode(v) for k, v in json.loads(store.read_text()).items()}
    with KeyledgerClient(setup.sessions, [setup.backend]) as client:
        for name, blob in stored.items():
            assert parse(blob).key_id == current_id
            opened = client.decrypt(blob, {"app": "docs", "doc": name}, tenant="acme")
            assert opened == name.encode()

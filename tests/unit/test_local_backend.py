"""The dev-only local backend's own behaviour (the provider contract suite comes later)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from keyledger.errors import InvalidSpec, ProviderError
from keyledger.providers.base import BackendConfig, KeyVersionRequest, KmsKeyState
from keyledger.providers.local.backend import LocalBackend, open_local_backend
from keyledger.providers.local.keystore import DEV_ONLY_NOTICE, FORMAT, read_keystore
from keyledger.settings import Settings


def _request(marker: str = "uid.v1") -> KeyVersionRequest:
    return KeyVersionRequest(
        tenant="acme", key_name="phi", version=1, algorithm="AES-256-GCM", marker=marker
    )


def test_create_is_idempotent_per_marker(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "ks.json")
    first = backend.create_key_version(_request())
    again = backend.create_key_version(_request())
    other = backend.create_key_version(_request("uid.v2"))
    assert first.ref == again.ref != other.ref
    assert backend.find_key_version("uid.v1") == first
    assert stat.S_IMODE((tmp_path / "ks.json").stat().st_mode) == 0o600


def test_disabled_key_refuses_crypto_and_reports_state(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "ks.json")
    ref = backend.create_key_version(_request()).ref
    data_key = backend.generate_data_key(ref)
    assert backend.unwrap_data_key(ref, data_key.wrapped) == data_key.plaintext
    assert data_key.plaintext.hex() not in repr(data_key)
    backend.disable(ref)
    assert backend.describe(ref).state is KmsKeyState.DISABLED
    with pytest.raises(ProviderError, match="disabled") as raised:
        backend.unwrap_data_key(ref, data_key.wrapped)
    assert data_key.wrapped.hex() not in str(raised.value)
    backend.enable(ref)
    backend.schedule_deletion(ref, 7)
    assert backend.describe(ref).state is KmsKeyState.PENDING_DELETION


def test_keystore_name_cannot_be_a_path(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(InvalidSpec, match=r"spec\.local\.keystore"):
        open_local_backend(BackendConfig("p", "local", {"keystore": "../../etc/x"}), settings)


def test_file_marks_itself_dev_only(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "ks.json")
    backend.create_key_version(_request())
    first_line = (tmp_path / "ks.json").read_text().splitlines()[0]
    assert "NOT FOR PRODUCTION" in json.loads(first_line)["notice"]


def test_a_change_appends_one_line_and_leaves_the_rest_of_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    backend = LocalBackend(path)
    first = backend.create_key_version(_request("uid.v1")).ref
    before, inode = path.read_bytes(), path.stat().st_ino
    backend.create_key_version(_request("uid.v2"))
    backend.disable(first)
    after = path.read_bytes()
    assert path.stat().st_ino == inode  # not rewritten
    assert after.startswith(before)
    assert len(after.splitlines()) == len(before.splitlines()) + 2


def test_another_process_changes_are_seen_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    writer, reader = LocalBackend(path), LocalBackend(path)
    ref = writer.create_key_version(_request("uid.v1")).ref
    assert reader.describe(ref).state is KmsKeyState.ENABLED
    writer.disable(ref)
    assert reader.describe(ref).state is KmsKeyState.DISABLED
    with path.open("ab") as journal:
        journal.write(b'{"id": "torn-by-a-crash", "entr')  # no newline: never read
    assert reader.find_key_version("uid.v1") is not None
    other = writer.create_key_version(_request("uid.v2")).ref  # closes the torn line off
    assert reader.describe(other).state is KmsKeyState.ENABLED
    assert set(read_keystore(path)) == {ref.rsplit("/", 1)[1], other.rsplit("/", 1)[1]}


def test_a_whole_document_keystore_is_read_and_compacted_at_its_first_change(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ks.json"
    legacy = {
        "marker": "uid.v1",
        "material": base64.b64encode(bytes(32)).decode(),
        "enabled": True,
        "deletion_date": None,
        "labels": {},
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    path.write_text(json.dumps({"notice": DEV_ONLY_NOTICE, "keys": {"k1": legacy}}))
    backend = LocalBackend(path)
    found = backend.find_key_version("uid.v1")
    assert found is not None
    backend.create_key_version(_request("uid.v2"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["format"] == FORMAT
    assert {line["id"] for line in lines[1:]} == set(read_keystore(path)) and len(lines) == 3
    assert LocalBackend(path).describe(found.ref).state is KmsKeyState.ENABLED


def test_superseded_lines_are_compacted_away(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    backend = LocalBackend(path)
    ref = backend.create_key_version(_request()).ref
    for _ in range(100):
        backend.disable(ref)
        backend.enable(ref)
    assert len(path.read_text().splitlines()) < 100
    assert backend.describe(ref).state is KmsKeyState.ENABLED

"""The dev-only local backend's own behaviour (the provider contract suite comes later)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from keyledger.errors import InvalidSpec, ProviderError
from keyledger.providers.base import BackendConfig, KeyVersionRequest, KmsKeyState
from keyledger.providers.local.backend import LocalBackend, open_local_backend
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
    assert "NOT FOR PRODUCTION" in json.loads((tmp_path / "ks.json").read_text())["notice"]

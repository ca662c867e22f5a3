"""What a drift check asks Vault, and what it still sees, against a real OpenBao dev server.

`describe` reads the transit key on every call and keyledger's own state document
as this process last read or wrote it, so an idle key's check is one HTTP request.
Requests are counted where every one of them goes out: requests' transport
adapter, under hvac and under the session's own GET alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import hvac
import pytest
import requests
from requests.adapters import HTTPAdapter

from keyledger.errors import ProviderAccessDenied, ProviderUnavailable
from keyledger.providers.base import KeyVersionRequest, KmsKeyState
from keyledger.providers.vault.backend import VaultBackend
from keyledger.providers.vault.config import VaultAuth
from keyledger.providers.vault.names import TransitVersion
from keyledger.providers.vault.session import VaultSession
from keyledger.providers.vault.state import KEPT_FOR_S, TransitStateStore
from tests.contract.backends.vault import (
    STATE_MOUNT,
    STATE_PATH,
    TRANSIT_MOUNT,
    backend_for,
    prepare_server,
)
from tests.harness.net import free_port
from tests.harness.openbao import OpenBaoServer


@pytest.fixture(scope="module")
def token(openbao: OpenBaoServer) -> str:
    return prepare_server(openbao)


@pytest.fixture
def backend(openbao: OpenBaoServer, token: str) -> Iterator[VaultBackend]:
    opened = backend_for(openbao.address, token)
    yield opened
    opened.close()


@pytest.fixture
def root(openbao: OpenBaoServer) -> hvac.Client:
    return openbao.root_client()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every HTTP request sent from here on, by anyone in the process: "METHOD path"."""
    seen: list[str] = []
    send = HTTPAdapter.send

    def counted(
        adapter: HTTPAdapter, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        seen.append(f"{request.method} {request.path_url}")
        return send(adapter, request, *args, **kwargs)

    monkeypatch.setattr(HTTPAdapter, "send", counted)
    return seen


def _versions(backend: VaultBackend, count: int) -> tuple[str, list[str]]:
    key_name = f"k{uuid.uuid4().hex[:8]}"
    refs = [
        backend.create_key_version(
            KeyVersionRequest("acme", key_name, n, "AES-256-GCM", f"{uuid.uuid4()}.v{n}")
        ).ref
        for n in range(1, count + 1)
    ]
    return f"keyledger.acme.{key_name}", refs


def _transit_read(key: str) -> str:
    return f"GET /v1/{TRANSIT_MOUNT}/keys/{key}"


def _state_read(key: str) -> str:
    return f"GET /v1/{STATE_MOUNT}/data/{STATE_PATH}/keys/{TRANSIT_MOUNT}/{key}"


def test_a_drift_check_is_one_request_for_the_transit_key(
    backend: VaultBackend, sent: list[str]
) -> None:
    key, (v1,) = _versions(backend, 1)
    sent.clear()
    assert backend.describe(v1).state is KmsKeyState.ENABLED
    assert sent == [_transit_read(key)]


def test_a_new_holder_reads_the_state_its_predecessor_wrote_then_keeps_it(
    openbao: OpenBaoServer, token: str, backend: VaultBackend, sent: list[str]
) -> None:
    """A failover: the replica taking the key over starts with nothing kept."""
    key, (_, v2, _) = _versions(backend, 3)
    backend.disable(v2)  # a middle version: only keyledger's state says so, not transit
    successor = backend_for(openbao.address, token)
    try:
        sent.clear()
        assert successor.describe(v2).state is KmsKeyState.DISABLED
        assert sent == [_transit_read(key), _state_read(key)]
        sent.clear()
        assert successor.describe(v2).state is KmsKeyState.DISABLED
        assert sent == [_transit_read(key)]
    finally:
        successor.close()


def test_keyledgers_own_state_changes_show_at_the_next_drift_check(
    backend: VaultBackend, sent: list[str]
) -> None:
    key, (_, v2, _) = _versions(backend, 3)
    assert backend.describe(v2).state is KmsKeyState.ENABLED
    for change, expected in (
        (backend.disable, KmsKeyState.DISABLED),
        (backend.enable, KmsKeyState.ENABLED),
        (lambda ref: backend.schedule_deletion(ref, 7), KmsKeyState.PENDING_DELETION),
    ):
        change(v2)
        sent.clear()
        assert backend.describe(v2).state is expected
        assert sent == [_transit_read(key)]


def test_a_drift_check_fails_as_every_other_vault_call_does(
    openbao: OpenBaoServer, token: str, backend: VaultBackend
) -> None:
    _, (v1,) = _versions(backend, 1)
    bogus = f"s.{uuid.uuid4().hex}"
    with pytest.raises(ProviderAccessDenied, match="denied reading transit key") as denied:
        backend_for(openbao.address, bogus).describe(v1)
    assert bogus not in str(denied.value)
    assert denied.value.__cause__ is None
    unreachable = backend_for(f"http://127.0.0.1:{free_port()}", token)
    with pytest.raises(ProviderUnavailable, match=r"cannot reach Vault .* \(ConnectionError\)"):
        unreachable.describe(v1)


def test_changes_to_the_transit_key_outside_keyledger_show_at_the_next_drift_check(
    backend: VaultBackend, root: hvac.Client
) -> None:
    key, (v1,) = _versions(backend, 1)
    v2 = TransitVersion(TRANSIT_MOUNT, key, 2).ref
    assert [backend.describe(ref).state for ref in (v1, v2)] == [
        KmsKeyState.ENABLED,
        KmsKeyState.MISSING,
    ]

    root.secrets.transit.rotate_key(key, mount_point=TRANSIT_MOUNT)
    assert backend.describe(v2).state is KmsKeyState.ENABLED

    root.adapter.post(f"/v1/{TRANSIT_MOUNT}/keys/{key}/config", json={"min_decryption_version": 2})
    assert backend.describe(v1).state is KmsKeyState.DISABLED

    root.adapter.post(f"/v1/{TRANSIT_MOUNT}/keys/{key}/config", json={"deletion_allowed": True})
    root.secrets.transit.delete_key(key, mount_point=TRANSIT_MOUNT)
    assert [backend.describe(ref).state for ref in (v1, v2)] == [KmsKeyState.MISSING] * 2


def test_a_write_whose_answer_was_lost_leaves_nothing_kept(
    backend: VaultBackend, sent: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Vault applied the write, the answer never came: the next check reads."""
    key, (_, v2, _) = _versions(backend, 3)
    assert backend.describe(v2).state is KmsKeyState.ENABLED
    write = TransitStateStore._write_document

    def written_then_lost(store: TransitStateStore, *args: Any, **kwargs: Any) -> bool:
        write(store, *args, **kwargs)
        raise ProviderUnavailable("Vault did not answer within 10 s")

    with monkeypatch.context() as lossy, pytest.raises(ProviderUnavailable):
        lossy.setattr(TransitStateStore, "_write_document", written_then_lost)
        backend.disable(v2)

    sent.clear()
    assert backend.describe(v2).state is KmsKeyState.DISABLED
    assert sent == [_transit_read(key), _state_read(key)]


def test_a_peers_write_is_seen_once_the_kept_document_is_old_enough(
    openbao: OpenBaoServer, token: str, backend: VaultBackend, sent: list[str]
) -> None:
    """Two replicas overlap for seconds at a hand-over; what the other one wrote
    then is read at the latest KEPT_FOR_S later."""
    now = [0.0]
    session = VaultSession(openbao.address, VaultAuth("token", token=token))
    state = TransitStateStore(
        session,
        mount=STATE_MOUNT,
        path=STATE_PATH,
        transit_mount=TRANSIT_MOUNT,
        clock=lambda: now[0],
    )
    replica = VaultBackend(session, mount=TRANSIT_MOUNT, state=state)
    try:
        key, (_, v2, _) = _versions(backend, 3)
        assert replica.describe(v2).state is KmsKeyState.ENABLED
        backend.disable(v2)  # the peer
        now[0] += KEPT_FOR_S - 1
        sent.clear()
        replica.describe(v2)
        assert sent == [_transit_read(key)]

        now[0] += 1
        sent.clear()
        assert replica.describe(v2).state is KmsKeyState.DISABLED
        assert sent == [_transit_read(key), _state_read(key)]
    finally:
        replica.close()

"""Vault transit specifics the generic contract cannot see, against a real OpenBao dev server.

Per-version disable next to transit's prefix-only min_decryption_version, crash
recovery when transit moved ahead of the state store, version gaps, marker
conflicts, and check() with tokens and mounts that are almost right.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from keyledger.errors import InvalidSpec, ProviderAccessDenied, ProviderError
from keyledger.providers.base import BackendConfig, KeyVersionRequest, KmsKeyState
from keyledger.providers.vault.backend import VaultBackend, open_vault_backend
from keyledger.providers.vault.policy import required_policy
from keyledger.providers.vault.state import TransitVersionConflict
from keyledger.settings import Settings
from tests.contract.backends.vault import (
    STATE_MOUNT,
    STATE_PATH,
    TRANSIT_MOUNT,
    backend_for,
    prepare_server,
    vault_options,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.openbao import OpenBaoServer


@pytest.fixture(scope="module")
def backend(openbao: OpenBaoServer) -> Iterator[VaultBackend]:
    opened = backend_for(openbao.address, prepare_server(openbao))
    yield opened
    opened.close()


@pytest.fixture
def root(openbao: OpenBaoServer) -> hvac.Client:
    return openbao.root_client()


def _request(key_name: str, version: int, marker: str | None = None) -> KeyVersionRequest:
    return KeyVersionRequest(
        tenant="acme",
        key_name=key_name,
        version=version,
        algorithm="AES-256-GCM",
        marker=marker or f"{uuid.uuid4()}.v{version}",
    )


def _versions(backend: VaultBackend, count: int) -> tuple[str, list[str]]:
    key_name = f"k{uuid.uuid4().hex[:8]}"
    refs = [backend.create_key_version(_request(key_name, n)).ref for n in range(1, count + 1)]
    return f"keyledger.acme.{key_name}", refs


def _transit(root: hvac.Client, key: str) -> dict[str, int]:
    data = root.secrets.transit.read_key(key, mount_point=TRANSIT_MOUNT)["data"]
    return {
        k: data[k] for k in ("latest_version", "min_decryption_version", "min_encryption_version")
    }


def _root_can_decrypt(root: hvac.Client, key: str, wrapped: bytes) -> bool:
    try:
        root.secrets.transit.decrypt_data(key, wrapped.decode(), mount_point=TRANSIT_MOUNT)
    except hvac.exceptions.InvalidRequest:
        return False
    return True


def test_disabling_a_middle_version_leaves_its_neighbours_alone(
    backend: VaultBackend, root: hvac.Client
) -> None:
    key, (v1, v2, v3) = _versions(backend, 3)
    wrapped = {ref: backend.generate_data_key(ref).wrapped for ref in (v1, v2, v3)}
    backend.disable(v2)
    assert [backend.describe(r).state for r in (v1, v2, v3)] == [
        KmsKeyState.ENABLED,
        KmsKeyState.DISABLED,
        KmsKeyState.ENABLED,
    ]
    with pytest.raises(ProviderError, match="disabled"):
        backend.unwrap_data_key(v2, wrapped[v2])
    for ref in (v1, v3):
        assert len(backend.unwrap_data_key(ref, wrapped[ref])) == 32
    # Transit cannot block a middle version: keyledger alone refuses it.
    assert _transit(root, key)["min_decryption_version"] == 1


def test_disabling_the_oldest_versions_makes_vault_refuse_them_to_everyone(
    backend: VaultBackend, root: hvac.Client
) -> None:
    key, (v1, v2, v3) = _versions(backend, 3)
    wrapped = {ref: backend.generate_data_key(ref).wrapped for ref in (v1, v2, v3)}
    backend.disable(v2)
    backend.disable(v1)
    assert _transit(root, key)["min_decryption_version"] == 3
    assert not _root_can_decrypt(root, key, wrapped[v1])
    assert not _root_can_decrypt(root, key, wrapped[v2])
    # Enabling v1 lowers the floor to 1 and keeps v2 refused by keyledger.
    backend.enable(v1)
    assert _transit(root, key)["min_decryption_version"] == 1
    assert len(backend.unwrap_data_key(v1, wrapped[v1])) == 32
    assert backend.describe(v2).state is KmsKeyState.DISABLED
    with pytest.raises(ProviderError):
        backend.unwrap_data_key(v2, wrapped[v2])
    backend.enable(v2)
    assert len(backend.unwrap_data_key(v2, wrapped[v2])) == 32


def test_a_compromised_only_version_is_blocked_by_vault_once_rotated_away(
    backend: VaultBackend, root: hvac.Client
) -> None:
    key, (v1,) = _versions(backend, 1)
    wrapped = backend.generate_data_key(v1).wrapped
    backend.disable(v1)  # transit cannot block its latest version yet
    assert _root_can_decrypt(root, key, wrapped)
    key_name = key.removeprefix("keyledger.acme.")
    v2 = backend.create_key_version(_request(key_name, 2)).ref
    backend.make_primary(v2, _request(key_name, 2))
    assert not _root_can_decrypt(root, key, wrapped)
    assert _transit(root, key) == {
        "latest_version": 2,
        "min_decryption_version": 2,
        "min_encryption_version": 2,
    }


def test_primary_version_is_the_only_one_transit_makes_data_keys_from(
    backend: VaultBackend,
) -> None:
    key_name = f"k{uuid.uuid4().hex[:8]}"
    v1 = backend.create_key_version(_request(key_name, 1)).ref
    backend.make_primary(v1, _request(key_name, 1))
    v2 = backend.create_key_version(_request(key_name, 2)).ref
    backend.make_primary(v2, _request(key_name, 2))
    with pytest.raises(ProviderError) as raised:
        backend.generate_data_key(v1)
    assert raised.value.reason == "KmsKeyNotPrimary"
    backend.make_primary(v1, _request(key_name, 1))  # rollback
    assert len(backend.generate_data_key(v1).plaintext) == 32


def test_a_version_rotated_before_the_crash_is_returned_not_made_again(
    backend: VaultBackend, root: hvac.Client
) -> None:
    key, _ = _versions(backend, 1)
    key_name = key.removeprefix("keyledger.acme.")
    # The crash: transit rotated, keyledger never recorded anything about v2.
    root.secrets.transit.rotate_key(key, mount_point=TRANSIT_MOUNT)
    request = _request(key_name, 2)
    assert backend.find_key_version(request.marker) is None
    created = backend.create_key_version(request)
    assert created.ref.endswith("#2")
    assert _transit(root, key)["latest_version"] == 2
    assert backend.find_key_version(request.marker) == created


def test_a_claim_without_a_transit_version_is_not_found(backend: VaultBackend) -> None:
    key, _ = _versions(backend, 1)
    marker = f"{uuid.uuid4()}.v2"
    backend.state.claim(key, 2, marker)  # the crash: claimed, never rotated
    assert backend.find_key_version(marker) is None


def test_version_gaps_and_foreign_markers_are_refused(backend: VaultBackend) -> None:
    key, (v1,) = _versions(backend, 1)
    key_name = key.removeprefix("keyledger.acme.")
    with pytest.raises(TransitVersionConflict, match="latest version is 1"):
        backend.create_key_version(_request(key_name, 3))
    with pytest.raises(TransitVersionConflict, match="another ledger row") as raised:
        backend.create_key_version(_request(key_name, 1))
    assert not raised.value.retryable
    assert backend.describe(v1).state is KmsKeyState.ENABLED


def test_key_names_that_differ_only_in_a_trailing_character_get_their_own_keys(
    backend: VaultBackend,
) -> None:
    first = backend.create_key_version(_request("tail-", 1)).ref
    second = backend.create_key_version(_request("tail-_", 1)).ref
    assert first != second
    data_key = backend.generate_data_key(first)
    with pytest.raises(ProviderError):
        backend.unwrap_data_key(second, data_key.wrapped)


def test_scheduled_deletion_is_kept_and_cannot_be_undone_by_enable(backend: VaultBackend) -> None:
    _, (v1,) = _versions(backend, 1)
    when = backend.schedule_deletion(v1, 7)
    assert backend.schedule_deletion(v1, 30) == when
    with pytest.raises(ProviderError, match="scheduled for deletion"):
        backend.enable(v1)
    with pytest.raises(ProviderError):
        backend.unwrap_data_key(v1, b"vault:v1:" + base64.b64encode(b"x" * 40))


def test_wrapped_key_of_another_version_is_refused_before_vault_is_asked(
    backend: VaultBackend,
) -> None:
    _, (v1, v2) = _versions(backend, 2)
    wrapped = backend.generate_data_key(v2).wrapped
    with pytest.raises(ProviderError, match="wrapped by version 2, not 1"):
        backend.unwrap_data_key(v1, wrapped)


def test_check_names_what_the_token_lacks(openbao: OpenBaoServer, root: hvac.Client) -> None:
    root.sys.create_or_update_policy(
        "transit-only", f'path "{TRANSIT_MOUNT}/*" {{ capabilities = ["read", "update"] }}'
    )
    token = root.auth.token.create(policies=["transit-only"], ttl="1h")["auth"]["client_token"]
    with pytest.raises(ProviderAccessDenied, match=STATE_MOUNT) as raised:
        backend_for(openbao.address, token).check()
    assert token not in raised.value.message


def test_check_names_a_mount_of_the_wrong_kind(openbao: OpenBaoServer, root: hvac.Client) -> None:
    root.sys.enable_secrets_engine("kv", path="kv-one", options={"version": "1"})
    backend = backend_for(openbao.address, openbao.root_token)
    backend.state.mount = "kv-one"
    with pytest.raises(InvalidSpec, match=r"spec\.vault\.stateMount.*kv v1, not kv v2"):
        backend.check()


def test_state_written_only_under_the_state_path(root: hvac.Client, backend: VaultBackend) -> None:
    _versions(backend, 1)
    listed = root.secrets.kv.v2.list_secrets("", mount_point=STATE_MOUNT)["data"]["keys"]
    assert listed == ["contract/"]


def test_unknown_ref_is_missing_or_not_ours(backend: VaultBackend) -> None:
    assert backend.describe(f"vault:{TRANSIT_MOUNT}/keyledger.acme.nothing#1").state is (
        KmsKeyState.MISSING
    )
    with pytest.raises(ProviderError, match="not a version of a key on transit mount"):
        backend.describe("vault:other/keyledger.acme.x#1")


@pytest.mark.cluster
def test_kubernetes_auth_logs_in_with_the_service_account_and_again_when_expired(
    control_plane: ControlPlane,
    openbao: OpenBaoServer,
    backend: VaultBackend,  # mounts transit and the state KV
    root: hvac.Client,
    tmp_path: Path,
) -> None:
    namespace = f"kl-vault-{uuid.uuid4().hex[:6]}"
    kubectl(control_plane, "create", "namespace", namespace)
    for account in ("keyledger", "vault-reviewer"):
        kubectl(control_plane, "create", "serviceaccount", account, "--namespace", namespace)
    kubectl(
        control_plane,
        "create",
        "clusterrolebinding",
        f"{namespace}-token-review",
        "--clusterrole=system:auth-delegator",
        f"--serviceaccount={namespace}:vault-reviewer",
    )
    reviewer_jwt, operator_jwt = (
        kubectl(
            control_plane, "create", "token", account, "--namespace", namespace, "--duration=1h"
        ).stdout.strip()
        for account in ("vault-reviewer", "keyledger")
    )
    ca_data = kubectl(
        control_plane,
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "--output=jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ).stdout
    auth_mount = f"k8s-{namespace}"
    root.sys.enable_auth_method("kubernetes", path=auth_mount)
    root.adapter.post(
        f"/v1/auth/{auth_mount}/config",
        json={
            "kubernetes_host": control_plane.server,
            "kubernetes_ca_cert": base64.b64decode(ca_data).decode(),
            "token_reviewer_jwt": reviewer_jwt,
        },
    )
    root.sys.create_or_update_policy(
        "keyledger", required_policy(TRANSIT_MOUNT, STATE_MOUNT, STATE_PATH)
    )
    root.adapter.post(
        f"/v1/auth/{auth_mount}/role/keyledger",
        json={
            "bound_service_account_names": ["keyledger"],
            "bound_service_account_namespaces": [namespace],
            "token_policies": ["keyledger"],
            "token_ttl": "2s",  # expires within the test: the backend must log in again
            "token_max_ttl": "2s",
        },
    )
    token_file = tmp_path / "token"
    token_file.write_text(operator_jwt)

    def backend_as(role: str) -> VaultBackend:
        options = vault_options(
            openbao.address,
            auth={
                "method": "kubernetes",
                "role": role,
                "mountPath": auth_mount,
                "tokenPath": str(token_file),
            },
        )
        backend = open_vault_backend(BackendConfig("k8s", "vault", options), Settings())
        assert isinstance(backend, VaultBackend)
        return backend

    as_operator = backend_as("keyledger")
    as_operator.check()
    ref = as_operator.create_key_version(_request(f"k{uuid.uuid4().hex[:8]}", 1)).ref
    time.sleep(2.5)
    assert as_operator.describe(ref).state is KmsKeyState.ENABLED
    with pytest.raises(ProviderAccessDenied, match="role 'nope'") as raised:
        backend_as("nope").check()
    assert operator_jwt not in raised.value.message

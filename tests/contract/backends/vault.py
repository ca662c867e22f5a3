"""Vault transit on an OpenBao dev server, used with a least-privilege token.

The backend's token carries only `default` plus the policy keyledger documents
(`required_policy`), so the suite also proves that policy is enough.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keyledger.providers.base import BackendConfig
from keyledger.providers.vault.backend import VaultBackend, open_vault_backend
from keyledger.providers.vault.policy import required_policy
from keyledger.settings import Settings
from tests.contract.target import ContractTarget
from tests.harness.net import free_port
from tests.harness.openbao import OpenBaoServer, start_openbao, stop_openbao

CAPABILITIES = ("with_wrong_credentials", "unreachable", "primary_ref")

TRANSIT_MOUNT = "kms/transit"  # nested on purpose: refs and state paths must cope
STATE_MOUNT = "keyledger-state"
STATE_PATH = "contract"


def vault_options(address: str, auth: dict[str, str] | None = None) -> dict[str, Any]:
    """`spec.vault` of a provider on a server made ready by prepare_server: its
    mounts and state path, and token auth unless `auth` says otherwise."""
    return {
        "address": address,
        "mount": TRANSIT_MOUNT,
        "stateMount": STATE_MOUNT,
        "statePath": STATE_PATH,
        "auth": auth or {"method": "token"},
    }


def backend_for(address: str, token: str) -> VaultBackend:
    backend = open_vault_backend(
        BackendConfig("contract", "vault", vault_options(address), {"token": token}), Settings()
    )
    assert isinstance(backend, VaultBackend)
    return backend


def prepare_server(server: OpenBaoServer) -> str:
    """Mount transit and the state KV; return a token with keyledger's policy only."""
    root = server.root_client()
    root.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
    root.sys.enable_secrets_engine("kv", path=STATE_MOUNT, options={"version": "2"})
    root.sys.create_or_update_policy(
        "keyledger", required_policy(TRANSIT_MOUNT, STATE_MOUNT, STATE_PATH)
    )
    created = root.auth.token.create(policies=["keyledger"], ttl="2h")
    return str(created["auth"]["client_token"])


@contextmanager
def open_target(workdir: Path) -> Iterator[ContractTarget]:
    server = start_openbao(workdir)
    try:
        token = prepare_server(server)
        backend = backend_for(server.address, token)
        bogus = f"s.{secrets.token_urlsafe(18)}"
        root = server.root_client()

        def primary_ref(ref: str) -> str:
            # Transit's notion of "current": the key's min_encryption_version.
            key = ref.removeprefix(f"vault:{TRANSIT_MOUNT}/").rpartition("#")[0]
            data = root.secrets.transit.read_key(key, mount_point=TRANSIT_MOUNT)["data"]
            return f"vault:{TRANSIT_MOUNT}/{key}#{data['min_encryption_version']}"

        yield ContractTarget(
            backend=backend,
            with_wrong_credentials=lambda: backend_for(server.address, bogus),
            wrong_secrets=(bogus,),
            unreachable=lambda: backend_for(f"http://127.0.0.1:{free_port()}", token),
            primary_ref=primary_ref,
            keeps_deletion_schedule=True,
        )
        backend.close()
    finally:
        stop_openbao(server)

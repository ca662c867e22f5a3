"""Azure Key Vault: keyledger's own HTTPS test server (tests/harness/azure_kv), reached by
the real azure-identity and azure-keyvault-keys clients with a service principal."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from keyledger.providers.azure.backend import open_azure_key_vault_backend
from keyledger.providers.base import BackendConfig, KeyBackend
from keyledger.settings import Settings
from tests.contract.target import ContractTarget
from tests.harness.azure_kv import AzureKeyVaultServer, azure_key_vault
from tests.harness.net import free_port

NAME = "azureKeyVault"
CAPABILITIES = ("with_wrong_credentials", "unreachable")


def azure_backend(
    server: AzureKeyVaultServer,
    workdir: Path,
    *,
    credentials: Mapping[str, str] | None = None,
    vault_url: str | None = None,
) -> KeyBackend:
    """The backend as the registry would open it, trusting the test server."""
    options = {**server.options(), "vaultUrl": vault_url or server.url}
    config = BackendConfig(
        "contract-azure", "azureKeyVault", options, credentials or server.credentials()
    )
    return open_azure_key_vault_backend(config, Settings(data_dir=workdir), emulator=server.trust)


@contextmanager
def open_target(workdir: Path) -> Iterator[ContractTarget]:
    with azure_key_vault(workdir) as server:
        backend = azure_backend(server, workdir)
        wrong_secret = secrets.token_urlsafe(30)
        try:
            yield ContractTarget(
                backend=backend,
                with_wrong_credentials=lambda: azure_backend(
                    server,
                    workdir,
                    credentials={**server.credentials(), "clientSecret": wrong_secret},
                ),
                wrong_secrets=(wrong_secret,),
                unreachable=lambda: azure_backend(
                    server, workdir, vault_url=f"https://127.0.0.1:{free_port()}"
                ),
                # Key Vault's "current" is always the newest version; the ledger pins refs.
                primary_ref=None,
            )
        finally:
            backend.close()

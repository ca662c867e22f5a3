"""An Azure Key Vault of our own for the tests: HTTPS with a self-signed certificate,
the bearer challenge, Entra's discovery and token endpoints for one service
principal, and the keys routes keyledger uses (`routes`, `vault`, `server`).

It runs as a child process (`python -m tests.harness.azure_kv`). The real
azure-identity and azure-keyvault-keys clients reach it when they trust its
certificate, skip Entra instance discovery and accept a challenge resource that
is not the vault's domain: the backend's `EmulatorTrust`.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient

from keyledger.providers.azure.config import EmulatorTrust
from tests.harness.child import start_child, stop_child
from tests.harness.tls import self_signed_certificate

SECRET_ENV = "KEYLEDGER_TEST_AZURE_CLIENT_SECRET"


@dataclasses.dataclass(frozen=True)
class AzureKeyVaultServer:
    url: str  # the vault URL and the Entra authority: one server answers both
    tenant_id: str
    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    ca_file: Path = dataclasses.field(compare=False)
    process: subprocess.Popen[str] = dataclasses.field(repr=False, compare=False)

    @property
    def trust(self) -> EmulatorTrust:
        return EmulatorTrust(str(self.ca_file))

    def options(self) -> dict[str, Any]:
        """The provider's spec.azureKeyVault section."""
        return {"vaultUrl": self.url, "authorityHost": self.url, "keyType": "RSA"}

    def credentials(self) -> dict[str, str]:
        """The data of the provider's credentialsRef Secret."""
        return {
            "tenantId": self.tenant_id,
            "clientId": self.client_id,
            "clientSecret": self.client_secret,
        }

    def key_client(self) -> KeyClient:
        """A plain SDK client, for looking (and changing things) behind the backend's back."""
        credential = ClientSecretCredential(
            self.tenant_id,
            self.client_id,
            self.client_secret,
            authority=self.url,
            disable_instance_discovery=True,
            connection_verify=str(self.ca_file),
        )
        return KeyClient(
            self.url,
            credential,
            connection_verify=str(self.ca_file),
            verify_challenge_resource=False,
        )


def start_azure_key_vault(workdir: Path) -> AzureKeyVaultServer:
    run_dir = workdir / "azure-key-vault"
    run_dir.mkdir(mode=0o700, exist_ok=True)
    cert_file, key_file = self_signed_certificate(run_dir)
    tenant, client, secret = str(uuid.uuid4()), str(uuid.uuid4()), secrets.token_urlsafe(30)
    process, (port,) = start_child(
        "tests.harness.azure_kv",
        run_dir / "server.log",
        (str(cert_file), str(key_file), tenant, client),
        env={SECRET_ENV: secret},
    )
    return AzureKeyVaultServer(
        f"https://127.0.0.1:{port}", tenant, client, secret, cert_file, process
    )


def stop_azure_key_vault(server: AzureKeyVaultServer) -> None:
    stop_child(server.process)


@contextmanager
def azure_key_vault(workdir: Path) -> Iterator[AzureKeyVaultServer]:
    server = start_azure_key_vault(workdir)
    try:
        yield server
    finally:
        stop_azure_key_vault(server)

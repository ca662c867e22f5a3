"""How keyledger connects to one vault: the `spec.azureKeyVault` section, the credential
it implies, the KeyClient, and the one call the SDK has no method for.

Credentials: a credentialsRef Secret with `tenantId`, `clientId` and
`clientSecret` is a service principal (`ClientSecretCredential`); without
credentialsRef the operator's own identity is used through
`DefaultAzureCredential` (workload identity on AKS, managed identity, AZURE_*
environment variables). `authorityHost` names the Entra endpoint of a
sovereign cloud (e.g. https://login.microsoftonline.us); the default is the
public cloud.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    map_error,
)
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.keyvault.keys import KeyClient

from keyledger.errors import InvalidSpec
from keyledger.providers.base import BackendConfig

KEY_TYPES = ("RSA", "RSA-HSM", "oct-HSM")
# Short timeouts and few retries: a handler must fail fast and retry later
# rather than hang a kopf worker on an unreachable vault.
_CLIENT_SETTINGS: dict[str, Any] = {
    "connection_timeout": 3,
    "read_timeout": 10,
    "retry_total": 2,
    "retry_backoff_max": 5,
    "user_agent": "keyledger",
    # azure-core logs every request at INFO; keyledger's KMS metrics count calls already.
    "http_logging_level": logging.DEBUG,
}
_ERROR_MAP = {401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError}
_VAULT_URL = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$")
_CREDENTIAL_KEYS = ("tenantId", "clientId", "clientSecret")


@dataclass(frozen=True)
class EmulatorTrust:
    """Tests only, never set in production: talk to a local Key Vault emulator.

    Trusts the emulator's self-signed certificate (`ca_file`) for the vault and
    the authority, accepts a bearer challenge whose resource is not the vault's
    domain (the emulator is not *.vault.azure.net), and skips Entra instance discovery.
    """

    ca_file: str


@dataclass(frozen=True)
class AzureKeyVaultOptions:
    vault_url: str
    key_type: str
    authority_host: str | None


def read_options(config: BackendConfig) -> AzureKeyVaultOptions:
    options = config.options
    where = f"provider {config.provider_name!r}"
    vault_url = str(options.get("vaultUrl") or "")
    if not _VAULT_URL.match(vault_url):
        raise InvalidSpec(
            f"{where}: spec.azureKeyVault.vaultUrl must be the vault's https URL without a "
            f"path, e.g. https://<name>.vault.azure.net, got {vault_url[:80]!r}"
        )
    key_type = str(options.get("keyType") or "RSA")
    if key_type not in KEY_TYPES:
        raise InvalidSpec(
            f"{where}: spec.azureKeyVault.keyType must be one of {', '.join(KEY_TYPES)} "
            f"(RSA for standard vaults, RSA-HSM for premium, oct-HSM on Managed HSM), "
            f"got {key_type!r}"
        )
    authority_host = str(options.get("authorityHost") or "") or None
    if authority_host is not None and not _VAULT_URL.match(authority_host):
        raise InvalidSpec(
            f"{where}: spec.azureKeyVault.authorityHost must be an https URL without a path, "
            "e.g. https://login.microsoftonline.us"
        )
    return AzureKeyVaultOptions(vault_url.rstrip("/"), key_type, authority_host)


def azure_credential(
    config: BackendConfig,
    options: AzureKeyVaultOptions,
    *,
    instance_discovery: bool = True,
    **transport: Any,
) -> TokenCredential:
    """The credential the provider's Secret (or its absence) describes.

    `transport` holds azure-core transport settings shared with the vault client;
    `instance_discovery=False` skips MSAL's authority check against Entra's
    public metadata endpoint, which a test emulator (or Azure Stack) cannot serve.
    """
    given = {k: config.credentials.get(k, "") for k in _CREDENTIAL_KEYS}
    authority = {"authority": options.authority_host} if options.authority_host else {}
    transport = {"http_logging_level": logging.DEBUG, **transport}
    if not any(given.values()):
        return DefaultAzureCredential(**authority, **transport)
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise InvalidSpec(
            f"provider {config.provider_name!r}: the credentialsRef Secret lacks "
            f"{', '.join(missing)}; it must hold tenantId, clientId and clientSecret of a "
            "service principal. Remove credentialsRef to use the operator's own identity"
        )
    try:
        return ClientSecretCredential(
            given["tenantId"],
            given["clientId"],
            given["clientSecret"],
            disable_instance_discovery=not instance_discovery,
            **authority,
            **transport,
        )
    except ValueError:
        # azure-identity checks the tenant id's characters; its message is fine but
        # names no field, and the secret must not be near a traceback.
        raise InvalidSpec(
            f"provider {config.provider_name!r}: tenantId in the credentialsRef Secret is not "
            "a valid Entra tenant id (a GUID or a domain such as contoso.onmicrosoft.com)"
        ) from None


def key_client(
    options: AzureKeyVaultOptions, credential: TokenCredential, emulator: EmulatorTrust | None
) -> KeyClient:
    test_only: dict[str, Any] = {}
    if emulator is not None:
        test_only = {"connection_verify": emulator.ca_file, "verify_challenge_resource": False}
    return KeyClient(options.vault_url, credential, **_CLIENT_SETTINGS, **test_only)


def key_operation(
    keys: KeyClient, name: str, version: str, operation: str, algorithm: str, value: bytes
) -> tuple[str, bytes]:
    """wrapKey / unwrapKey on one key version: the answering key id and the result.

    Sent with `send_request` through the client's own pipeline (auth, retries)
    rather than CryptographyClient, which would wrap locally with the public key
    (no vault-side check or audit log) and cannot for oct-HSM keys. Failures are
    raised as the azure-core errors the SDK's own methods raise.
    """
    body = {"alg": algorithm, "value": base64.urlsafe_b64encode(value).rstrip(b"=").decode()}
    response = keys.send_request(
        HttpRequest("POST", f"/keys/{name}/{version}/{operation.lower()}", json=body)
    )
    if response.status_code != 200:
        map_error(response.status_code, response, _ERROR_MAP)
        raise HttpResponseError(response=response)
    result = response.json()
    encoded = result.get("value")
    if not isinstance(encoded, str):
        raise HttpResponseError(message=f"{operation} answered without a value", response=response)
    return str(result.get("kid") or ""), base64.urlsafe_b64decode(
        encoded + "=" * (-len(encoded) % 4)
    )

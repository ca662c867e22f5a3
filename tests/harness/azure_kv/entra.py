"""The Entra ID side of the Key Vault test server: one tenant, one service principal.

Answers what MSAL (inside azure-identity's ClientSecretCredential) asks with
instance discovery off: the tenant's OpenID configuration, and the v2.0 token
endpoint's client-credentials grant for the Key Vault scope. A wrong client
secret gets Entra's AADSTS7000215 answer, an unknown client AADSTS700016.
Tokens are opaque random strings the vault side looks up.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

KEY_VAULT_RESOURCE = "https://vault.azure.net"
KEY_VAULT_SCOPE = f"{KEY_VAULT_RESOURCE}/.default"
TOKEN_LIFETIME = timedelta(hours=1)


@dataclass
class Entra:
    authority: str  # https://host:port
    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    _tokens: dict[str, datetime] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def openid_configuration(self, tenant: str) -> tuple[int, dict[str, Any]]:
        if tenant != self.tenant_id:
            return 400, _error("invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.")
        base = f"{self.authority}/{tenant}"
        return 200, {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def token(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if tenant != self.tenant_id:
            return 400, _error("invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return 400, _error("unsupported_grant_type", "AADSTS70003: unsupported grant type.")
        if form.get("client_id") != self.client_id:
            return 400, _error(
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not "
                "found in the directory.",
            )
        if not secrets.compare_digest(form.get("client_secret", ""), self.client_secret):
            return 401, _error(
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in "
                "the request is the client secret value, not the client secret ID.",
            )
        if KEY_VAULT_SCOPE not in form.get("scope", "").split():
            return 400, _error("invalid_scope", "AADSTS70011: The provided scope is not valid.")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = datetime.now(UTC) + TOKEN_LIFETIME
        lifetime = int(TOKEN_LIFETIME.total_seconds())
        return 200, {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }

    def accepts(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and expiry > datetime.now(UTC)

    def challenge(self) -> str:
        """The WWW-Authenticate header of a 401 from the vault."""
        return (
            f'Bearer authorization="{self.authority}/{self.tenant_id}", '
            f'resource="{KEY_VAULT_RESOURCE}"'
        )


def _error(code: str, description: str) -> dict[str, Any]:
    return {"error": code, "error_description": description, "error_codes": [], "trace_id": ""}

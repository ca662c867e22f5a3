"""The `spec.vault` section of a provider, checked and reduced to what the backend needs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from keyledger.errors import InvalidSpec
from keyledger.providers.base import BackendConfig

# Path segments: no "." or ".." (Vault would resolve them), nothing a ref could not parse.
_PATH = re.compile(r"^(?!\.\.?(/|$))[A-Za-z0-9_.-]+(/(?!\.\.?(/|$))[A-Za-z0-9_.-]+)*$")
_ADDRESS = re.compile(r"^https?://[^/\s]+/?$")

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class VaultAuth:
    """How the operator proves who it is: a token from the Secret, or its ServiceAccount."""

    method: Literal["token", "kubernetes"]
    token: str | None = field(default=None, repr=False)
    role: str | None = None
    mount_path: str = "kubernetes"
    token_path: Path = SERVICE_ACCOUNT_TOKEN


@dataclass(frozen=True)
class VaultOptions:
    address: str
    mount: str
    state_mount: str
    state_path: str
    namespace: str | None
    auth: VaultAuth


def read_options(config: BackendConfig) -> VaultOptions:
    options = config.options
    where = f"provider {config.provider_name!r}"
    address = str(options.get("address") or "")
    if not _ADDRESS.match(address):
        raise InvalidSpec(
            f"{where}: spec.vault.address must be http(s)://host[:port] without a path, "
            f"got {address!r}"
        )
    return VaultOptions(
        address=address.rstrip("/"),
        mount=_path_option(options, "mount", "transit", where),
        state_mount=_path_option(options, "stateMount", "secret", where),
        state_path=_path_option(options, "statePath", "keyledger", where),
        namespace=str(options.get("namespace") or "") or None,
        auth=_auth(config, where),
    )


def _path_option(options: Mapping[str, object], name: str, default: str, where: str) -> str:
    value = str(options.get(name) or default).strip("/")
    if not _PATH.match(value):
        raise InvalidSpec(
            f"{where}: spec.vault.{name} {value!r} must be a Vault path: segments of "
            "letters, digits, '_', '.', '-' separated by '/'"
        )
    return value


def _auth(config: BackendConfig, where: str) -> VaultAuth:
    auth = config.options.get("auth") or {}
    if not isinstance(auth, Mapping):
        raise InvalidSpec(f"{where}: spec.vault.auth must be an object")
    method = str(auth.get("method") or "token")
    if method == "token":
        token = config.credentials.get("token")
        if not token:
            raise InvalidSpec(
                f"{where}: spec.vault.auth.method is token, so credentialsRef must name a "
                "Secret with the Vault token under key `token`"
            )
        return VaultAuth("token", token=token)
    if method == "kubernetes":
        role = str(auth.get("role") or "")
        if not role:
            raise InvalidSpec(f"{where}: spec.vault.auth.role is required for kubernetes auth")
        return VaultAuth(
            "kubernetes",
            role=role,
            mount_path=str(auth.get("mountPath") or "kubernetes").strip("/"),
            token_path=Path(str(auth.get("tokenPath") or SERVICE_ACCOUNT_TOKEN)),
        )
    raise InvalidSpec(
        f"{where}: spec.vault.auth.method must be token or kubernetes, not {method!r}"
    )

"""Constructors of KMS backends by the spec field that names them."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from keyledger.errors import InvalidSpec
from keyledger.providers.base import BackendConfig, KeyBackend
from keyledger.settings import Settings

BackendFactory = Callable[[BackendConfig, Settings], KeyBackend]

_FACTORIES: dict[str, BackendFactory] = {}

# The spec fields of KeyProvider / ClusterKeyProvider, one per backend.
BACKEND_FIELDS = ("awsKms", "azureKeyVault", "vault", "gcpKms", "pkcs11", "local")


def register_backend(field_name: str) -> Callable[[BackendFactory], BackendFactory]:
    if field_name not in BACKEND_FIELDS:
        raise ValueError(f"unknown backend field {field_name!r}")

    def decorate(factory: BackendFactory) -> BackendFactory:
        _FACTORIES[field_name] = factory
        return factory

    return decorate


# Where each built-in backend lives; imported only when a provider uses it, so
# that an SDK is loaded (and must be installed) only for the backends in use.
BUILTIN_BACKEND_MODULES = {
    "local": "keyledger.providers.local.backend",
    "awsKms": "keyledger.providers.aws.backend",
    "vault": "keyledger.providers.vault.backend",
    "pkcs11": "keyledger.providers.pkcs11.backend",
    "gcpKms": "keyledger.providers.gcp.backend",
    "azureKeyVault": "keyledger.providers.azure.backend",
}


def open_backend(config: BackendConfig, settings: Settings) -> KeyBackend:
    _load_builtin_backend(config.backend)
    factory = _FACTORIES.get(config.backend)
    if factory is None:
        supported = ", ".join(sorted(_FACTORIES)) or "none"
        raise InvalidSpec(
            f"provider {config.provider_name!r}: backend spec.{config.backend} is not "
            f"supported by this operator build (supported: {supported})",
            reason="BackendNotSupported",
        )
    return factory(config, settings)


def _load_builtin_backend(field_name: str) -> None:
    module = BUILTIN_BACKEND_MODULES.get(field_name)
    if module is None or field_name in _FACTORIES:
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return  # not built yet: open_backend reports "not supported"
        raise

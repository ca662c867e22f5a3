"""Constructors of KMS backends by the spec field that names them."""

from __future__ import annotations

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


def open_backend(config: BackendConfig, settings: Settings) -> KeyBackend:
    _load_builtin_backends()
    factory = _FACTORIES.get(config.backend)
    if factory is None:
        supported = ", ".join(sorted(_FACTORIES)) or "none"
        raise InvalidSpec(
            f"provider {config.provider_name!r}: backend spec.{config.backend} is not "
            f"supported by this operator build (supported: {supported})",
            reason="BackendNotSupported",
        )
    return factory(config, settings)


def _load_builtin_backends() -> None:
    # Imported lazily so that a backend's SDK is loaded only when used.
    from keyledger.providers import local  # noqa: F401, PLC0415

"""The one list of KMS backends, and their constructors by the spec field that names them.

`BACKENDS` is the only place a backend's names are written down: the spec field
of KeyProvider / ClusterKeyProvider that selects it (the CRD generator and the
provider resolution read it), its subpackage under `keyledger.providers`, and
the `encryption_keys.kms_provider` value of its versions. The contract suite
finds its targets by the same table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from keyledger.domain import KmsProvider
from keyledger.errors import InvalidSpec
from keyledger.providers.base import BackendConfig, KeyBackend
from keyledger.settings import Settings

BackendFactory = Callable[[BackendConfig, Settings], KeyBackend]


@dataclass(frozen=True)
class BuiltinBackend:
    field: str  # spec.<field> of KeyProvider / ClusterKeyProvider
    package: str  # keyledger.providers.<package>
    kms_provider: KmsProvider  # encryption_keys.kms_provider

    @property
    def module(self) -> str:
        """The module that registers the backend's factory."""
        return f"keyledger.providers.{self.package}.backend"


BACKENDS = (
    BuiltinBackend("awsKms", "aws", KmsProvider.AWS_KMS),
    BuiltinBackend("azureKeyVault", "azure", KmsProvider.AZURE_KV),
    BuiltinBackend("vault", "vault", KmsProvider.HASHICORP_VAULT),
    BuiltinBackend("gcpKms", "gcp", KmsProvider.GCP_KMS),
    BuiltinBackend("pkcs11", "pkcs11", KmsProvider.LOCAL_HSM),
    BuiltinBackend("local", "local", KmsProvider.LOCAL_SOFTWARE),
)
BACKEND_FIELDS = tuple(backend.field for backend in BACKENDS)
_BY_FIELD = {backend.field: backend for backend in BACKENDS}

_FACTORIES: dict[str, BackendFactory] = {}


def kms_provider_of(field_name: str) -> KmsProvider:
    """The ledger's `kms_provider` for versions made by the backend `field_name` selects."""
    return _builtin(field_name).kms_provider


def register_backend(field_name: str) -> Callable[[BackendFactory], BackendFactory]:
    _builtin(field_name)

    def decorate(factory: BackendFactory) -> BackendFactory:
        _FACTORIES[field_name] = factory
        return factory

    return decorate


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


def _builtin(field_name: str) -> BuiltinBackend:
    backend = _BY_FIELD.get(field_name)
    if backend is None:
        raise ValueError(f"unknown backend field {field_name!r}")
    return backend


def _load_builtin_backend(field_name: str) -> None:
    # Imported only when a provider uses it, so that an SDK is loaded (and must be
    # installed) only for the backends in use.
    backend = _BY_FIELD.get(field_name)
    if backend is None or field_name in _FACTORIES:
        return
    try:
        importlib.import_module(backend.module)
    except ModuleNotFoundError as exc:
        if exc.name in (backend.module, f"keyledger.providers.{backend.package}"):
            return  # not built yet: open_backend reports "not supported"
        raise

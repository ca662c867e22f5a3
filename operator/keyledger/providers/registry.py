"""The one list of KMS backends, and their constructors by the spec field that names them.

`BACKENDS` is the only place a backend's names are written down: the spec field
of KeyProvider / ClusterKeyProvider that selects it (the CRD generator and the
provider resolution read it), its subpackage under `keyledger.providers`, and
the `encryption_keys.kms_provider` value of its versions. The contract suite
finds its targets by the same table.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keyledger.domain import KmsProvider
from keyledger.errors import InvalidSpec
from keyledger.providers.base import BackendConfig, KeyBackend
from keyledger.settings import Settings

BackendFactory = Callable[[BackendConfig, Settings], KeyBackend]


@dataclass(frozen=True)
class AdoptableRef:
    """The shape of a KMS key reference `spec.adopt.kmsKeyId` may name."""

    pattern: str
    example: str

    def matches(self, ref: str) -> bool:
        return re.fullmatch(self.pattern, ref) is not None


# spec.deletionWindowDays as the CRD allows it; a backend may narrow it.
DELETION_WINDOW_DAYS = range(7, 31)


def _any_window(_options: Mapping[str, Any]) -> range:
    return DELETION_WINDOW_DAYS


def _gcp_window(options: Mapping[str, Any]) -> range:
    # GCP destroys after the CryptoKey's destroy_scheduled_duration, fixed when
    # keyledger creates it: a longer window than that cannot be kept.
    days = int(options.get("destroyScheduledDays", 30))
    return range(DELETION_WINDOW_DAYS.start, min(days, DELETION_WINDOW_DAYS.stop - 1) + 1)


@dataclass(frozen=True)
class BuiltinBackend:
    field: str  # spec.<field> of KeyProvider / ClusterKeyProvider
    package: str  # keyledger.providers.<package>
    kms_provider: KmsProvider  # encryption_keys.kms_provider
    # What spec.adopt.kmsKeyId looks like for it; None: it cannot adopt (why).
    adoptable: AdoptableRef | str
    # The spec.deletionWindowDays it can keep, given the provider's backend options.
    deletion_window_days: Callable[[Mapping[str, Any]], range] = _any_window

    @property
    def module(self) -> str:
        """The module that registers the backend's factory."""
        return f"keyledger.providers.{self.package}.backend"


BACKENDS = (
    BuiltinBackend(
        "awsKms",
        "aws",
        KmsProvider.AWS_KMS,
        AdoptableRef(
            r"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        ),
    ),
    BuiltinBackend(
        "azureKeyVault",
        "azure",
        KmsProvider.AZURE_KV,
        AdoptableRef(
            r"https://[A-Za-z0-9.-]+(:[0-9]+)?/keys/[0-9A-Za-z-]{1,127}/[0-9A-Za-z]{1,64}",
            "https://records.vault.azure.net/keys/phi/0123456789abcdef0123456789abcdef",
        ),
    ),
    BuiltinBackend(
        "vault",
        "vault",
        KmsProvider.HASHICORP_VAULT,
        "Vault transit key versions are numbered by keyledger, so there is nothing to take over",
    ),
    BuiltinBackend(
        "gcpKms",
        "gcp",
        KmsProvider.GCP_KMS,
        AdoptableRef(
            r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+"
            r"/cryptoKeyVersions/[0-9]+",
            "projects/p/locations/global/keyRings/acme/cryptoKeys/phi/cryptoKeyVersions/1",
        ),
        deletion_window_days=_gcp_window,
    ),
    BuiltinBackend(
        "pkcs11",
        "pkcs11",
        KmsProvider.LOCAL_HSM,
        AdoptableRef(
            r"pkcs11:token=[^;]+;object=[^;]+;id=[^;]+;type=secret-key",
            "pkcs11:token=keyledger;object=keyledger/acme/phi;id=%00%00%00%01;type=secret-key",
        ),
    ),
    BuiltinBackend(
        "local",
        "local",
        KmsProvider.LOCAL_SOFTWARE,
        # The keystore is a DNS label (the CRD's rule) and the entry one path-free id:
        # `local:../../etc/passwd` is refused at admission, not left to the backend.
        AdoptableRef(r"local:[a-z0-9]([-a-z0-9]*[a-z0-9])?/[A-Za-z0-9-]+", "local:demo/0b1c2d3e"),
    ),
)
BACKEND_FIELDS = tuple(backend.field for backend in BACKENDS)
_BY_FIELD = {backend.field: backend for backend in BACKENDS}

_FACTORIES: dict[str, BackendFactory] = {}


def builtin_backend(field_name: str) -> BuiltinBackend:
    """The registry's row for the backend `field_name` selects."""
    return _builtin(field_name)


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

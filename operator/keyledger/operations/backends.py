"""Open KMS backends for providers, reusing clients while a provider is unchanged."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping

from keyledger.metrics import InstrumentedBackend
from keyledger.operations.providers import ProviderView
from keyledger.providers.base import BackendConfig, KeyBackend
from keyledger.providers.registry import open_backend
from keyledger.settings import Settings

# Reads a Secret's data (decoded) given (namespace, name); injected by the caller.
SecretReader = Callable[[str, str], Mapping[str, str]]

# A Secret read serves every open() of its provider for this long: every key's
# reconcile and drift check opens its backend, and those must not each cost an
# API call. A fixed Secret is still noticed within this plus the provider re-check.
SECRET_TTL_SECONDS = 10.0


class BackendCache:
    """One open backend per provider configuration (spec section + credentials)."""

    def __init__(
        self,
        settings: Settings,
        read_secret: SecretReader,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.read_secret = read_secret
        self.clock = clock
        self._open: dict[tuple[str, str | None, str], tuple[str, KeyBackend]] = {}
        self._secrets: dict[tuple[str, str], tuple[float, Mapping[str, str]]] = {}
        self._lock = threading.Lock()

    def open(self, provider: ProviderView) -> KeyBackend:
        credentials = self._credentials(provider)
        fingerprint = hashlib.sha256(
            json.dumps(
                [provider.backend, provider.options, credentials], sort_keys=True, default=str
            ).encode()
        ).hexdigest()
        slot = (provider.kind.value, provider.namespace, provider.name)
        with self._lock:
            cached = self._open.get(slot)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            backend: KeyBackend = InstrumentedBackend(
                open_backend(
                    BackendConfig(
                        provider_name=provider.name,
                        backend=provider.backend,
                        options=provider.options,
                        credentials=credentials,
                    ),
                    self.settings,
                )
            )
            if cached is not None:
                cached[1].close()
            self._open[slot] = (fingerprint, backend)
            return backend

    def close(self) -> None:
        with self._lock:
            for _, backend in self._open.values():
                backend.close()
            self._open.clear()

    def _credentials(self, provider: ProviderView) -> Mapping[str, str]:
        ref = provider.credentials_ref
        if not ref:
            return {}
        namespace = provider.namespace or ref.get("namespace") or self.settings.operator_namespace
        key = (namespace, ref["name"])
        now = self.clock()
        with self._lock:
            cached = self._secrets.get(key)
        if cached is not None and now - cached[0] < SECRET_TTL_SECONDS:
            return cached[1]
        data = self.read_secret(*key)  # errors are not cached: the next call retries
        with self._lock:
            self._secrets[key] = (now, data)
        return data

"""Prometheus metrics. Labels are provider kinds, operations and outcomes: never
tenants' key material, refs or anything secret."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from prometheus_client import Counter, Histogram

from keyledger.domain import KmsProvider
from keyledger.errors import ProviderError
from keyledger.providers.base import DataKey, KeyBackend, KeyVersionRequest, KmsKey

KMS_CALLS = Counter(
    "keyledger_kms_calls_total",
    "Calls made to a KMS backend.",
    ["provider", "operation", "outcome"],
)
KMS_LATENCY = Histogram(
    "keyledger_kms_call_seconds",
    "Time spent in KMS backend calls.",
    ["provider", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

T = TypeVar("T")


class InstrumentedBackend:
    """Wraps a backend so that every KMS call is counted and timed."""

    def __init__(self, inner: KeyBackend) -> None:
        self.inner = inner
        self.provider: KmsProvider = inner.provider
        self.adoption_refusal = inner.adoption_refusal
        self.region = inner.region
        self.endpoint = inner.endpoint

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return call()
        except ProviderError as error:
            outcome = error.reason
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            KMS_CALLS.labels(self.provider.value, operation, outcome).inc()
            KMS_LATENCY.labels(self.provider.value, operation).observe(
                time.perf_counter() - started
            )

    def check(self) -> None:
        self._call("check", self.inner.check)

    def create_key_version(self, request: KeyVersionRequest) -> KmsKey:
        return self._call("create_key_version", lambda: self.inner.create_key_version(request))

    def find_key_version(self, marker: str) -> KmsKey | None:
        return self._call("find_key_version", lambda: self.inner.find_key_version(marker))

    def describe(self, ref: str) -> KmsKey:
        return self._call("describe", lambda: self.inner.describe(ref))

    def make_primary(self, ref: str, request: KeyVersionRequest) -> None:
        self._call("make_primary", lambda: self.inner.make_primary(ref, request))

    def disable(self, ref: str) -> None:
        self._call("disable", lambda: self.inner.disable(ref))

    def enable(self, ref: str) -> None:
        self._call("enable", lambda: self.inner.enable(ref))

    def schedule_deletion(self, ref: str, window_days: int) -> datetime:
        return self._call(
            "schedule_deletion", lambda: self.inner.schedule_deletion(ref, window_days)
        )

    def destroy_due(self, now: datetime) -> list[str]:
        return self._call("destroy_due", lambda: self.inner.destroy_due(now))

    def generate_data_key(self, ref: str) -> DataKey:
        return self._call("generate_data_key", lambda: self.inner.generate_data_key(ref))

    def unwrap_data_key(self, ref: str, wrapped: bytes) -> bytes:
        return self._call("unwrap_data_key", lambda: self.inner.unwrap_data_key(ref, wrapped))

    def close(self) -> None:
        self.inner.close()

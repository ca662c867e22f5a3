"""Prometheus metrics. Labels are provider kinds, operations, passes, reasons and
provider names: bounded sets, never key ids, refs, tokens or anything secret."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from keyledger.domain import KmsProvider
from keyledger.errors import KeyledgerError, ProviderError
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

# Passes over an EncryptionKey: `reconcile` (create/update/resume and requests),
# `scheduled` (the per-key task: timers and drift checks).
PASS_SECONDS = Histogram(
    "keyledger_reconcile_duration_seconds",
    "Time one pass over an EncryptionKey took, failed passes included.",
    ["pass"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PASS_FAILURES = Counter(
    "keyledger_reconcile_failures_total",
    "Passes over an EncryptionKey that failed, by the condition reason they reported.",
    ["pass", "reason"],
)
LEDGER_SECONDS = Histogram(
    "keyledger_ledger_query_seconds",
    "Time the ledger database took to answer one statement.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
LEDGER_ERRORS = Counter(
    "keyledger_ledger_errors_total",
    "Ledger database errors (connecting or executing), by the driver's error class.",
    ["error"],
)
PROVIDER_READY = Gauge(
    "keyledger_provider_ready",
    "1 when the KeyProvider/ClusterKeyProvider passed its last connectivity check, else 0.",
    ["kind", "namespace", "name"],
)
# A failure we did not foresee has no reason of its own.
UNEXPECTED = "Unexpected"

T = TypeVar("T")


class observe_pass(contextlib.ContextDecorator):  # noqa: N801  # used like a function
    """Times a pass and counts its failure by reason; usable as `with` or decorator."""

    def __init__(self, pass_name: str) -> None:
        self.pass_name = pass_name
        self._started = 0.0

    def __enter__(self) -> observe_pass:
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        PASS_SECONDS.labels(self.pass_name).observe(time.perf_counter() - self._started)
        if error is not None:
            reason = error.reason if isinstance(error, KeyledgerError) else UNEXPECTED
            PASS_FAILURES.labels(self.pass_name, reason).inc()


def observe_ledger_statement(seconds: float) -> None:
    LEDGER_SECONDS.observe(seconds)


def count_ledger_error(error_class: str) -> None:
    LEDGER_ERRORS.labels(error_class).inc()


def observe_provider(
    kind: str, namespace: str | None, name: str, status: Mapping[str, Any]
) -> None:
    """The provider's readiness gauge, from the status its check is about to write."""
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    PROVIDER_READY.labels(kind, namespace or "", name).set(1 if ready else 0)


def forget_provider(kind: str, namespace: str | None, name: str) -> None:
    """The provider is deleted: its readiness series goes with it, as a key's do."""
    with contextlib.suppress(KeyError):
        PROVIDER_READY.remove(kind, namespace or "", name)


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

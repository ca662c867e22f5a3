"""The one place that turns keyledger errors into kopf's retry semantics."""

from __future__ import annotations

import kopf

from keyledger.errors import InvalidSpec, KeyledgerError, ProviderError, ProviderNotReady

# How long to wait before retrying, by what went wrong.
PROVIDER_NOT_READY_DELAY = 15.0
PROVIDER_ERROR_DELAY = 30.0


def to_kopf_error(error: KeyledgerError) -> kopf.TemporaryError | kopf.PermanentError:
    """Retry what waiting can fix; stop on what only a spec change can fix."""
    if isinstance(error, InvalidSpec):
        return kopf.PermanentError(error.message)
    if isinstance(error, ProviderNotReady):
        return kopf.TemporaryError(error.message, delay=PROVIDER_NOT_READY_DELAY)
    if isinstance(error, ProviderError) and not error.retryable:
        # Access denied or a missing key rarely fix themselves quickly, but they
        # can (a policy is corrected), so retry, just slowly.
        return kopf.TemporaryError(error.message, delay=PROVIDER_ERROR_DELAY * 4)
    return kopf.TemporaryError(error.message, delay=PROVIDER_ERROR_DELAY)

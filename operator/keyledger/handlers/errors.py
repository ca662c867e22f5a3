"""The one place that turns keyledger errors into kopf's retry semantics."""

from __future__ import annotations

import kopf

from keyledger.errors import InvalidSpec, KeyledgerError, ProviderError, ProviderNotReady

# Retries start quickly (a provider checked a moment later is the common case)
# and back off, so that many keys waiting on one broken provider stay quiet.
FIRST_RETRY_DELAY = 3.0
MAX_RETRY_DELAY = 120.0
# Delay before retrying an error we did not foresee (kopf's `backoff`).
UNEXPECTED_ERROR_BACKOFF = 10.0


def retry_delay(retry: int, *, slow: bool = False) -> float:
    delay: float = FIRST_RETRY_DELAY * 2.0 ** min(retry, 10) * (4 if slow else 1)
    return min(delay, MAX_RETRY_DELAY)


def to_kopf_error(error: KeyledgerError, retry: int) -> kopf.TemporaryError | kopf.PermanentError:
    """Retry what waiting can fix; stop on what only a spec change can fix."""
    if isinstance(error, InvalidSpec):
        return kopf.PermanentError(error.message)
    if isinstance(error, ProviderNotReady):
        return kopf.TemporaryError(error.message, delay=retry_delay(retry))
    # Access denied or a missing key rarely fix themselves quickly, but they can
    # (a policy is corrected), so those are retried too, just more slowly.
    slow = isinstance(error, ProviderError) and not error.retryable
    return kopf.TemporaryError(error.message, delay=retry_delay(retry, slow=slow))

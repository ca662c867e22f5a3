"""keyledger's error types.

Every error a user can cause says which field is wrong and how to fix it.
Messages never carry key material, credentials or provider request ids:
providers sanitize before raising (see `keyledger.providers.sanitize`).
`keyledger.handlers.errors` is the one place that maps these to kopf's
temporary/permanent errors.
"""

from __future__ import annotations


class KeyledgerError(Exception):
    """Base of all keyledger errors. `reason` is a constant CamelCase word for conditions."""

    reason = "Error"
    # A passing state nobody needs to hear about: no condition, no Warning, just a retry.
    quiet = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


class InvalidSpec(KeyledgerError):
    """The resource's spec cannot work as written; retrying will not help until it changes."""

    reason = "InvalidSpec"


class ProviderNotReady(KeyledgerError):
    """The referenced provider is missing, not Ready, or not allowed; wait and retry."""

    reason = "ProviderNotReady"


class ProviderNotCheckedYet(ProviderNotReady):
    """The provider has no Ready condition yet (a new operator or a new provider):
    its first check is seconds away, so keys wait for it without a word."""

    reason = "ProviderNotCheckedYet"
    quiet = True


class ProviderError(KeyledgerError):
    """A KMS call failed. `retryable` says whether waiting can help."""

    reason = "ProviderError"
    retryable = True


# Reasons of ProviderErrors that every backend reports alike, so that callers and
# conditions tell them apart whichever KMS raised them.
KEY_DISABLED = "KmsKeyDisabled"
KEY_PENDING_DELETION = "KmsKeyPendingDeletion"
DATA_KEY_NOT_WRAPPED_BY_KEY = "DataKeyNotWrappedByKey"


class ProviderUnavailable(ProviderError):
    reason = "ProviderUnavailable"


class ProviderThrottled(ProviderError):
    reason = "ProviderThrottled"


class ProviderAccessDenied(ProviderError):
    reason = "ProviderAccessDenied"
    retryable = False


class KmsKeyNotFound(ProviderError):
    reason = "KmsKeyNotFound"
    retryable = False


class LedgerConflict(KeyledgerError):
    """The ledger refused a write (e.g. a second ACTIVE version); re-read and retry."""

    reason = "LedgerConflict"


# -- raised by the application-facing client (keyledger.client) ----------------------


class KeyNotUsable(KeyledgerError):
    """The ledger has no version of this key that may do what was asked."""

    reason = "KeyNotUsable"


class TenantNotGranted(KeyNotUsable):
    """The ledger's row-level security hides this tenant from the client's database role."""

    reason = "TenantNotGranted"


class CiphertextInvalid(KeyledgerError):
    """The bytes are not a keyledger envelope, or not one this client can read."""

    reason = "CiphertextInvalid"


class DecryptionFailed(KeyledgerError):
    """The envelope does not open: tampered with, truncated, or another context."""

    reason = "DecryptionFailed"


class LedgerUnavailable(KeyledgerError):
    """The ledger database cannot be reached; nothing was changed, wait and retry."""

    reason = "LedgerUnavailable"


class TenantMismatch(KeyNotUsable):
    """The ciphertext was sealed for another tenant than the one the caller acts for."""

    reason = "TenantMismatch"


class VersionCompromised(KeyNotUsable):
    """Data under a COMPROMISED version opens only with an explicit, audited break glass."""

    reason = "VersionCompromised"


class StreamCorrupted(DecryptionFailed):
    """A keyledger stream does not open; each subclass names what was done to it."""

    reason = "StreamCorrupted"


class StreamHeaderAltered(StreamCorrupted):
    reason = "StreamHeaderAltered"


class StreamTruncated(StreamCorrupted):
    reason = "StreamTruncated"


class StreamSegmentsReordered(StreamCorrupted):
    reason = "StreamSegmentsReordered"


class StreamSegmentForeign(StreamCorrupted):
    """A segment is not this stream's at any position: altered, or taken from another."""

    reason = "StreamSegmentForeign"


class StreamExtended(StreamCorrupted):
    """Bytes follow the final segment."""

    reason = "StreamExtended"

"""The stored form of a data key wrapped by Cloud KMS.

    b"KLG1" | version number (4 bytes, big-endian) | Cloud KMS ciphertext

Decrypt takes a CryptoKey, not a version, and does not say which version
decrypted. The Encrypt that made the ciphertext bound it to the version's full
ref (additional authenticated data), so GCP refuses it under any other ref; the
number up front lets keyledger refuse a wrong version before any call, also
against emulators that ignore additional authenticated data.
"""

from __future__ import annotations

from keyledger.errors import ProviderError
from keyledger.providers.gcp.errors import DATA_KEY_NOT_WRAPPED_BY_VERSION
from keyledger.providers.gcp.names import VersionRef

MAGIC = b"KLG1"
_NUMBER_BYTES = 4
_HEADER = len(MAGIC) + _NUMBER_BYTES


def wrap_envelope(target: VersionRef, ciphertext: bytes) -> bytes:
    return MAGIC + target.number.to_bytes(_NUMBER_BYTES, "big") + ciphertext


def unwrap_envelope(target: VersionRef, wrapped: bytes, *, where: str) -> bytes:
    """The ciphertext inside `wrapped`, if `target` is the version that wrapped it."""
    if not wrapped.startswith(MAGIC) or len(wrapped) <= _HEADER:
        raise ProviderError(
            f"{where}: cannot unwrap the data key with {target.ref}: it was not wrapped by "
            "keyledger's GCP Cloud KMS backend",
            reason=DATA_KEY_NOT_WRAPPED_BY_VERSION,
        )
    number = int.from_bytes(wrapped[len(MAGIC) : _HEADER], "big")
    if number != target.number:
        raise ProviderError(
            f"{where}: cannot unwrap the data key with {target.ref}: it was wrapped by "
            f"version {number}",
            reason=DATA_KEY_NOT_WRAPPED_BY_VERSION,
        )
    return wrapped[_HEADER:]

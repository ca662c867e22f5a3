"""Keystore file failures as keyledger errors.

The local backend has no SDK: what fails is the file system. The message names
the keystore path and the OS reason, never the file's content.
"""

from __future__ import annotations

from pathlib import Path

from keyledger.errors import ProviderError
from keyledger.providers.sanitize import sanitize


def translate_error(error: OSError, *, keystore: Path) -> ProviderError:
    """The keyledger error for a keystore that cannot be read, locked or written."""
    return ProviderError(
        f"local keystore {keystore} is not usable: {sanitize(str(error.strerror))}",
        reason="KeystoreUnavailable",
    )

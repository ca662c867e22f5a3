"""How the `local` backend names a key version: `local:<keystore>/<uuid>`.

The idempotency marker is stored in the version's keystore entry; a lookup by
marker is an index probe (the backend indexes the parsed keystore by marker).
"""

from __future__ import annotations

from keyledger.errors import KmsKeyNotFound

REF_PREFIX = "local:"


def version_ref(keystore: str, key_id: str) -> str:
    return f"{REF_PREFIX}{keystore}/{key_id}"


def key_id_of(ref: str, keystore: str) -> str:
    """The keystore entry `ref` names; KmsKeyNotFound unless it is one of `keystore`."""
    prefix = f"{REF_PREFIX}{keystore}/"
    if not ref.startswith(prefix):
        raise KmsKeyNotFound(f"{ref} is not a key of local keystore {keystore!r}")
    return ref[len(prefix) :]

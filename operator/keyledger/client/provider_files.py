"""Backends for command-line use, opened from provider manifests on disk.

A file holds a KeyProvider / ClusterKeyProvider manifest, or just its spec,
naming exactly one backend; a top-level `credentials:` map stands in for the
Secret that `credentialsRef` names in the cluster (the caller's own credentials).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from keyledger.errors import InvalidSpec
from keyledger.providers.base import BackendConfig, KeyBackend
from keyledger.providers.registry import BACKEND_FIELDS, open_backend
from keyledger.settings import Settings


def open_provider_file(path: Path, settings: Settings) -> KeyBackend:
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        raise InvalidSpec(f"{path}: expected a provider manifest or its spec")
    spec = document.get("spec", document)
    name = (document.get("metadata") or {}).get("name", path.stem)
    fields = [f for f in BACKEND_FIELDS if f in spec]
    if len(fields) != 1:
        raise InvalidSpec(
            f"{path}: name exactly one backend ({', '.join(BACKEND_FIELDS)}), "
            f"found {', '.join(fields) or 'none'}"
        )
    credentials = {str(k): str(v) for k, v in (document.get("credentials") or {}).items()}
    options = dict(spec[fields[0]] or {})
    return open_backend(BackendConfig(name, fields[0], options, credentials), settings)

"""The `spec.local` section: which keystore file, under the operator's keystore directory."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from keyledger.errors import InvalidSpec
from keyledger.providers.base import BackendConfig
from keyledger.settings import Settings

_KEYSTORE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class LocalOptions:
    keystore: Path


def read_options(config: BackendConfig, settings: Settings) -> LocalOptions:
    name = str(config.options.get("keystore", "default"))
    if not _KEYSTORE_NAME.match(name):
        raise InvalidSpec(
            f"provider {config.provider_name!r}: spec.local.keystore {name!r} must be a "
            "lowercase DNS label (letters, digits, '-'); it names a file, not a path",
        )
    return LocalOptions(keystore=settings.keystore_dir() / f"{name}.json")

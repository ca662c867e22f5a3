"""The `spec.pkcs11` section and its credentials Secret, as typed settings.

The module is the HSM vendor's PKCS#11 library on the operator's filesystem;
the token is found by its label; the user PIN comes from the credentialsRef
Secret (key `pin`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from keyledger.errors import InvalidSpec
from keyledger.providers.base import BackendConfig

TOKEN_LABEL_MAX_BYTES = 32  # CK_TOKEN_INFO.label


@dataclass(frozen=True)
class Pkcs11Options:
    module_path: str
    token_label: str
    pin: str = field(repr=False)


def read_options(config: BackendConfig) -> Pkcs11Options:
    name = config.provider_name
    module_path = str(config.options.get("modulePath") or "")
    token_label = str(config.options.get("tokenLabel") or "")
    pin = config.credentials.get("pin", "")
    if not module_path or not Path(module_path).is_absolute():
        raise InvalidSpec(
            f"provider {name!r}: spec.pkcs11.modulePath must be the absolute path of the HSM "
            f"vendor's PKCS#11 library on the operator, got {module_path!r}"
        )
    if not Path(module_path).is_file():
        raise InvalidSpec(
            f"provider {name!r}: spec.pkcs11.modulePath {module_path} does not exist on the "
            "operator; mount the PKCS#11 library into the operator pod and name its path"
        )
    if not token_label or len(token_label.encode()) > TOKEN_LABEL_MAX_BYTES:
        raise InvalidSpec(
            f"provider {name!r}: spec.pkcs11.tokenLabel must be the token's label "
            f"(1 to {TOKEN_LABEL_MAX_BYTES} bytes), got {token_label!r}"
        )
    if not pin:
        raise InvalidSpec(
            f"provider {name!r}: the Secret in spec.credentialsRef has no key `pin`; "
            "put the token's user PIN there"
        )
    return Pkcs11Options(module_path=module_path, token_label=token_label, pin=pin)

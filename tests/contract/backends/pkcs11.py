"""The PKCS#11 backend against a SoftHSM2 token.

SoftHSM is configured once per process (see tests.harness.softhsm), so every
open_target shares its tokens; the suite's random key names keep runs apart.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keyledger.providers.base import BackendConfig
from keyledger.providers.pkcs11.backend import Pkcs11Backend, open_pkcs11_backend
from keyledger.settings import Settings
from tests.contract.target import ContractTarget
from tests.harness.softhsm import SoftHsmToken, softhsm

# No primary_ref: PKCS#11 has no "current version"; the ledger pins it.
CAPABILITIES = ("with_wrong_credentials", "unreachable")


def _backend(token: SoftHsmToken, label: str, pin: str, workdir: Path) -> Pkcs11Backend:
    backend = open_pkcs11_backend(
        BackendConfig(
            provider_name="contract-hsm",
            backend="pkcs11",
            options={"modulePath": token.module_path, "tokenLabel": label},
            credentials={"pin": pin},
        ),
        Settings(data_dir=workdir),
    )
    assert isinstance(backend, Pkcs11Backend)
    return backend


@contextmanager
def open_target(workdir: Path) -> Iterator[ContractTarget]:
    hsm = softhsm()
    token = hsm.token("keyledger-contract")
    # A token of its own: the contract token is logged in for the whole process,
    # and only a token nobody is logged in to makes C_Login check a PIN.
    locked_out = hsm.token("keyledger-wrong-pin")
    wrong_pin = secrets.token_hex(8)
    opened: list[Pkcs11Backend] = []

    def backend(label: str, pin: str) -> Pkcs11Backend:
        opened.append(_backend(token, label, pin, workdir))
        return opened[-1]

    try:
        yield ContractTarget(
            backend=backend(token.label, token.pin),
            with_wrong_credentials=lambda: backend(locked_out.label, wrong_pin),
            wrong_secrets=(wrong_pin,),
            unreachable=lambda: backend("keyledger-no-such-token", token.pin),
            keeps_deletion_schedule=True,
            notes=[
                "make_primary only checks the version exists: the ledger pins the version",
                "schedule_deletion records the date in the token and disables the key; "
                "destroy_due destroys it once the date has passed",
            ],
        )
    finally:
        for opened_backend in opened:
            opened_backend.close()

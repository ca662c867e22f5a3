"""The real operator, trusting the Key Vault test server.

    python -m tests.harness.emulator_operator run --standalone ...

The azureKeyVault backend reaches a test server only through `EmulatorTrust`
(its self-signed certificate, no Entra instance discovery, a bearer challenge
not from *.vault.azure.net), which has no setting on purpose: production never
turns it on. This launcher registers the backend with the trust the tests hand
over in TRUST_ENV, then runs the operator's own command line unchanged.
"""

from __future__ import annotations

import functools
import os

from keyledger.cli.main import main
from keyledger.providers.azure.backend import open_azure_key_vault_backend
from keyledger.providers.azure.config import EmulatorTrust
from keyledger.providers.registry import register_backend

TRUST_ENV = "KEYLEDGER_TEST_AZURE_CA_FILE"

if __name__ == "__main__":
    trust = EmulatorTrust(os.environ[TRUST_ENV])
    register_backend("azureKeyVault")(
        functools.partial(open_azure_key_vault_backend, emulator=trust)
    )
    raise SystemExit(main())

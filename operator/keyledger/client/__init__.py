"""Envelope encryption with tenants' keyledger keys, for the services that hold PHI.

from keyledger.client import KeyledgerClient

with KeyledgerClient(ledger_url, backends=[aws_backend]) as client:
    blob = client.encrypt("acme", "phi_encryption_key", b"...", {"record": "r-1"})
    client.decrypt(blob, {"record": "r-1"}, tenant="acme")
    with open("dump.sql", "rb") as src, open("dump.sql.kle", "wb") as dst:
        client.encrypt_stream("acme", "backups", src, dst, {"dump": "2026-11-29"})

AsyncKeyledgerClient offers the same calls as coroutines.
"""

from keyledger.client.aio import AsyncKeyledgerClient
from keyledger.client.breakglass import BreakGlass
from keyledger.client.cache import CacheLimits
from keyledger.client.client import KeyledgerClient

__all__ = ["AsyncKeyledgerClient", "BreakGlass", "CacheLimits", "KeyledgerClient"]

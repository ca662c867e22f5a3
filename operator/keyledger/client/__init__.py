"""Envelope encryption with tenants' keyledger keys, for the services that hold PHI.

from keyledger.client import KeyledgerClient

with KeyledgerClient(ledger_url, backends=[aws_backend]) as client:
    blob = client.encrypt("acme", "phi_encryption_key", b"...", {"record": "r-1"})
    client.decrypt(blob, {"record": "r-1"})
"""

from keyledger.client.cache import CacheLimits
from keyledger.client.client import KeyledgerClient

__all__ = ["CacheLimits", "KeyledgerClient"]

"""Entry point for `kopf run -m keyledger.main`: registers every handler."""

from keyledger.handlers import encryption_keys, providers, startup

__all__ = ["encryption_keys", "providers", "startup"]

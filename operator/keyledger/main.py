"""Entry point for `kopf run -m keyledger.main`: registers every handler."""

from keyledger.handlers import encryption_keys, providers, schedule, startup

__all__ = ["encryption_keys", "providers", "schedule", "startup"]

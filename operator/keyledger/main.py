"""Entry point for `kopf run -m keyledger.main`: registers every handler."""

from keyledger.handlers import admission, encryption_keys, providers, schedule, startup

__all__ = ["admission", "encryption_keys", "providers", "schedule", "startup"]

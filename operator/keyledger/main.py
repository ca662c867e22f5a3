"""Entry point for `kopf run -m keyledger.main`: registers every handler.

The admission webhooks' handlers are registered only where the operator serves
them (KEYLEDGER_WEBHOOK_PORT): kopf refuses to run admission handlers without a
server, and an operator that shards namespaces leaves serving them to one.
"""

from keyledger.handlers import encryption_keys, providers, schedule, startup
from keyledger.settings import get_settings

__all__ = ["encryption_keys", "providers", "schedule", "startup"]

if get_settings().webhook_port:
    from keyledger.handlers import admission

    __all__ += ["admission"]

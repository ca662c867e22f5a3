"""Named crash points for crash-safety tests.

`KEYLEDGER_FAILPOINTS=finish-pending.after-kms-create` makes the process kill
itself (SIGKILL, no cleanup, exactly like an OOM kill or a node loss) the first
time it reaches that point. Unset in production, where each call is one dict
lookup.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

ENV = "KEYLEDGER_FAILPOINTS"


def failpoint(name: str) -> None:
    armed = os.environ.get(ENV)
    if armed and name in armed.split(","):
        log.critical("failpoint %s reached: killing the operator", name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)

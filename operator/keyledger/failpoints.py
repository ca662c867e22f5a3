"""Named crash points for crash-safety tests.

`KEYLEDGER_FAILPOINTS=finish-pending.after-kms-create` makes the process kill
itself (SIGKILL, no cleanup, exactly like an OOM kill or a node loss) the first
time it reaches that point. Read once, through Settings; unset in production,
where each call is one lookup in an empty set.
"""

from __future__ import annotations

import logging
import os
import signal

from keyledger.settings import get_settings

log = logging.getLogger(__name__)


def failpoint(name: str) -> None:
    if name in get_settings().failpoints:
        log.critical("failpoint %s reached: killing the operator", name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)

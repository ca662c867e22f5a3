"""The operator's C heap: fewer malloc arenas, and freed pages handed back.

A burst of work (thousands of keys created at once) leaves glibc's heaps full
of freed chunks that RSS keeps counting long after the operator went idle, in
one arena per thread that ever allocated. Two arenas are plenty for a process
whose Python threads take turns on the GIL, and a periodic trim returns what
the burst freed. Both are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()


def limit_arenas() -> None:
    """Before the process starts its threads: at most ARENAS malloc arenas."""
    if _LIBC is not None and not _LIBC.mallopt(_M_ARENA_MAX, ARENAS):
        log.debug("mallopt(M_ARENA_MAX) refused")


def release_free_pages() -> None:
    """Hand the pages of freed chunks back to the OS (glibc malloc_trim)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)

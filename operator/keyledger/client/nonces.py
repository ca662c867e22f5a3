"""Records' GCM nonces: 96 random bits each from the OS, drawn a batch at a time.

A nonce is 12 bytes of os.urandom, used by one record and never again; a data
key seals at most 2**32 records (CacheLimits), the bound for random 96-bit
nonces under one key. One getrandom call per record was a fifth of a 1 KiB
encrypt (0.43 us); one call per 256 nonces, split in one struct call, costs
~0.05 us a nonce.

A pool belongs to one sealer, which draws from it under its own lock: no two
records, in any thread, get the same nonce. A process forked from this one
starts with a copy of every pool, so at os.fork the child empties all of them
before any of its own code runs; its records get nonces the child drew from
the OS itself, never ones its parent holds too.
"""

from __future__ import annotations

import os
import struct
import weakref

from keyledger.client.envelope import NONCE_BYTES

# A sealer that seals a handful of records holds a handful of nonces; one that
# seals many refills in batches of _MOST.
_FIRST = 8
_MOST = 256
_SPLIT = {
    batch: struct.Struct(f"{NONCE_BYTES}s" * batch).unpack
    for batch in (_FIRST * 2**doubling for doubling in range(6))
}

_POOLS: weakref.WeakSet[NoncePool] = weakref.WeakSet()


class NoncePool:
    """Unused nonces, in `free`. Take one as `free.pop() if free else pool.refill()`,
    under the owner's lock."""

    __slots__ = ("__weakref__", "_batch", "free")

    def __init__(self) -> None:
        self.free: list[bytes] = []
        self._batch = _FIRST
        _POOLS.add(self)

    def refill(self) -> bytes:
        """Fill the empty pool from the OS; one of the new nonces, taken."""
        batch = self._batch
        self.free.extend(_SPLIT[batch](os.urandom(NONCE_BYTES * batch)))
        self._batch = min(batch * 2, _MOST)
        return self.free.pop()


def _empty_every_pool() -> None:
    for pool in list(_POOLS):
        pool.free.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork either
    os.register_at_fork(after_in_child=_empty_every_pool)

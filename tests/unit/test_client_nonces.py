"""Records' nonces come from a pool the OS fills in batches: each one is used once,
by one thread, in one process (a forked child never uses its parent's)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import SupportsIndex

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.client.cache import CacheLimits, Sealer
from keyledger.client.envelope import FORMAT_RECORD, NONCE_BYTES, open_envelope, pack_head, parse
from keyledger.client.nonces import NoncePool
from keyledger.client.usage import LastUse
from keyledger.client.versions import Version
from keyledger.domain import KeyStatus, KmsProvider

KEY_ID = uuid.uuid4()
DATA_KEY = os.urandom(32)
HEAD = pack_head(FORMAT_RECORD, KEY_ID, "acme", b"wrapped:" + os.urandom(40))
CONTEXT = {"record": "r-1"}
VERSION = Version(
    KEY_ID, "acme", "phi", 1, KeyStatus.ACTIVE, "ref", KmsProvider.LOCAL_SOFTWARE, None, None, ()
)


def _sealer() -> Sealer:
    sealer = Sealer(VERSION, HEAD, AESGCM(DATA_KEY), 0.0, CacheLimits(), LastUse())
    sealer.renew(VERSION, 1000.0)
    return sealer


def _nonce(record: bytes | bytearray) -> bytes:
    return bytes(record[len(HEAD) : len(HEAD) + NONCE_BYTES])


def _pool(sealer: Sealer) -> NoncePool:
    return sealer._nonces  # the pool is what is under test


def test_every_record_gets_a_nonce_of_its_own() -> None:
    sealer = _sealer()
    records = [sealer.seal(b"phi", CONTEXT, now=1.0) for _ in range(2000)]
    nonces = {_nonce(record) for record in records if record is not None}
    assert len(nonces) == 2000  # several refills, none handed out twice
    assert all(open_envelope(parse(r), DATA_KEY, CONTEXT) == b"phi" for r in records if r)


class _SlowToPop(list[bytes]):
    """A pool whose pop yields to other threads between reading a nonce and removing
    it: two threads drawing at once, not one after the other under the sealer's lock,
    would both get it."""

    def pop(self, index: SupportsIndex = -1) -> bytes:
        nonce = self[index]
        time.sleep(0)
        del self[index]
        return nonce


def test_threads_sealing_at_once_never_share_a_nonce() -> None:
    sealer = _sealer()
    _pool(sealer).free = _SlowToPop()
    threads, each = 4, 250
    nonces: list[list[bytes]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def seal_many(mine: list[bytes]) -> None:
        start.wait()
        for _ in range(each):
            record = sealer.seal(b"phi", CONTEXT, now=1.0)
            assert record is not None
            mine.append(_nonce(record))

    workers = [threading.Thread(target=seal_many, args=(mine,)) for mine in nonces]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    drawn = [nonce for mine in nonces for nonce in mine]
    assert len(drawn) == threads * each
    assert len(set(drawn)) == len(drawn)


def test_a_forked_child_never_uses_a_nonce_its_parent_holds() -> None:
    sealer = _sealer()
    sealer.seal(b"before the fork", CONTEXT, now=1.0)
    held = set(_pool(sealer).free)  # the parent's unused nonces, copied into the child
    assert held
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: seal, report the nonces, leave without pytest's teardown
        try:
            os.close(read_end)
            records = [sealer.seal(b"in the child", CONTEXT, now=1.0) for _ in range(3)]
            os.write(write_end, b"".join(_nonce(r) for r in records if r is not None))
        finally:
            os._exit(0)
    os.close(write_end)
    parent = [sealer.seal(b"in the parent", CONTEXT, now=1.0) for _ in range(3)]
    with os.fdopen(read_end, "rb") as pipe:
        reported = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child = {reported[i : i + NONCE_BYTES] for i in range(0, len(reported), NONCE_BYTES)}
    assert len(child) == 3
    assert not child & held  # drawn afresh in the child, not from the copied pool
    assert not child & {_nonce(record) for record in parent if record is not None}

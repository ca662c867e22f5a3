"""Run as a child process by test_client_stream_memory.py: seal and open a stream far
larger than the address space this process may still map, and report as JSON.

    python -m tests.integration.stream_within_limit WORKDIR PAYLOAD_BYTES LIMIT_BYTES
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import uuid
from pathlib import Path

from keyledger.client import KeyledgerClient
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database

BLOCK = 1 << 20
CONTEXT = {"dump": "records-2026-11-29"}


class Payload:
    """`total` bytes, made up as they are read (a database dump's stand-in), hashed."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.index = 0
        self.base = hashlib.sha256(b"seed").digest() * (BLOCK // 32)
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        size = min(self.left, BLOCK if size < 0 else size)
        chunk = (self.index.to_bytes(8, "big") + self.base)[:size]
        self.index += 1
        self.left -= len(chunk)
        self.digest.update(chunk)
        return chunk


class Digest:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def main(workdir: Path, total: int, limit: int) -> int:
    url = f"sqlite:///{workdir / 'ledger.db'}"
    upgrade_database(url)
    sessions = make_session_factory(make_engine(url))
    backend = LocalBackend(workdir / "keys.json")
    spec = KeySpec.from_resource(
        "backups",
        {
            "tenant": "acme",
            "keyType": "BACKUP",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "local"},
        },
    )
    key = KeyResource(str(uuid.uuid4()), "acme", "backups", 1, spec, {})
    KeyOperations(sessions, actor="test").reconcile(key, backend, "local")
    client = KeyledgerClient(sessions, [backend])
    client.encrypt("acme", "backups", b"warm-up", CONTEXT)  # ledger and KMS paths loaded

    # From here the process may map at most `limit` bytes more than it already has.
    ceiling = _address_space() + limit
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))

    source = Payload(total)
    sealed = workdir / "dump.kle"
    with sealed.open("wb") as dst:
        written = client.encrypt_stream("acme", "backups", source, dst, CONTEXT)
    opened = Digest()
    with sealed.open("rb") as src:
        read = client.decrypt_stream(src, opened, CONTEXT, tenant="acme")
    # The limit is real: holding even a small part of the payload at once fails.
    try:
        held = bytearray(limit)
        del held
        limit_bites = False
    except MemoryError:
        limit_bites = True
    print(
        json.dumps(
            {
                "written": written,
                "read": read,
                "sealed_bytes": sealed.stat().st_size,
                "same": source.digest.hexdigest() == opened.digest.hexdigest(),
                "limit_bites": limit_bites,
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))

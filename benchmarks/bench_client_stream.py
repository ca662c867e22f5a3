"""Streaming throughput: encrypt_stream / decrypt_stream of 1 GiB against bare AES-GCM
over the same bytes.

Both read the same file (a 1 GiB dump, then its sealed form; in the page cache
after the first round) and write to the same counting sink. The floor reads it
in 1 MiB pieces and seals (or opens) each with AES-256-GCM: what any streaming
encryption of these bytes must do. The client adds the header, nonces, framing, the
look-ahead that finds the final segment, a KMS data key per stream (the local
backend) and the ledger reads. Rounds alternate floor and client; the best of
each counts, so both meet the same disturbances on a shared machine.

Prints one JSON line per measurement and one per target; exits non-zero when
a ratio misses its target.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.client import KeyledgerClient
from keyledger.client.stream import SEGMENT_BYTES
from keyledger.lifecycle.spec import KeySpec
from keyledger.operations.keys import KeyOperations
from keyledger.operations.views import KeyResource
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database

TOTAL = 1 << 30
ROUNDS = 7
CONTEXT = {"dump": "records-2026-11-29"}
MAX_RATIO = {"encrypt_stream": 1.2, "decrypt_stream": 1.2}


class Count:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


def timed(operation: Callable[[], object]) -> float:
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def floor(path: Path, chunk_bytes: int, seal: Callable[[bytes, memoryview], bytes]) -> None:
    """Read `path` into one reused buffer, `seal` each piece (or open it), count the result."""
    sink = Count()
    buffer = memoryview(bytearray(chunk_bytes))
    with path.open("rb") as source:
        index = 0
        while placed := source.readinto(buffer):
            nonce = b"\0" * 4 + struct.pack(">Q", index)
            sink.write(seal(nonce, buffer[:placed]))
            index += 1


def ledger_with_a_key(workdir: Path) -> KeyledgerClient:
    url = f"sqlite:///{workdir / 'ledger.db'}"
    upgrade_database(url)
    sessions = make_session_factory(make_engine(url))
    backend = LocalBackend(workdir / "bench.json")
    spec = KeySpec.from_resource(
        "backups",
        {
            "tenant": "acme",
            "keyType": "BACKUP",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "bench"},
        },
    )
    key = KeyResource(str(uuid.uuid4()), "bench", "backups", 1, spec, {})
    KeyOperations(sessions, actor="bench").reconcile(key, backend, "bench")
    return KeyledgerClient(sessions, [backend])


def measure(workdir: Path) -> dict[str, float]:
    client = ledger_with_a_key(workdir)
    block = os.urandom(SEGMENT_BYTES)
    dump, sealed, floor_sealed = workdir / "dump.sql", workdir / "dump.kle", workdir / "floor"
    with dump.open("wb") as out:
        for index in range(TOTAL // len(block)):
            out.write(index.to_bytes(8, "big") + block[8:])
    cipher = AESGCM(os.urandom(32))
    aad = b"header-tag-16-b."

    def client_encrypt(sink: BinaryIO | Count) -> None:
        with dump.open("rb") as source:
            client.encrypt_stream("acme", "backups", source, sink, CONTEXT)

    def client_decrypt() -> None:
        with sealed.open("rb") as source:
            client.decrypt_stream(source, Count(), CONTEXT, tenant="acme")

    with sealed.open("wb") as out:
        client_encrypt(out)
    with dump.open("rb") as source, floor_sealed.open("wb") as out:
        index = 0
        while chunk := source.read(SEGMENT_BYTES):
            out.write(cipher.encrypt(b"\0" * 4 + struct.pack(">Q", index), chunk, aad))
            index += 1

    runs: list[tuple[str, Callable[[], object]]] = [
        (
            "encrypt floor",
            lambda: floor(dump, SEGMENT_BYTES, lambda n, d: cipher.encrypt(n, d, aad)),
        ),
        ("encrypt_stream", lambda: client_encrypt(Count())),
        (
            "decrypt floor",
            lambda: floor(floor_sealed, SEGMENT_BYTES + 16, lambda n, d: cipher.decrypt(n, d, aad)),
        ),
        ("decrypt_stream", client_decrypt),
    ]
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for name, operation in runs:
            best[name] = min(best.get(name, float("inf")), timed(operation))
    client.close()
    return best


def main() -> int:
    with tempfile.TemporaryDirectory() as workdir:
        best = measure(Path(workdir))
    for name, seconds in best.items():
        print(
            json.dumps(
                {
                    "benchmark": "client_stream",
                    "measure": name,
                    "bytes": TOTAL,
                    "seconds": round(seconds, 3),
                    "mib_per_s": round(TOTAL / seconds / (1 << 20), 1),
                }
            )
        )
    failed = False
    for name, target in MAX_RATIO.items():
        ratio = best[name] / best[f"{name.split('_')[0]} floor"]
        ok = ratio <= target
        failed |= not ok
        print(
            json.dumps(
                {
                    "benchmark": "client_stream",
                    "target": f"{name} / bare AES-GCM",
                    "ratio": round(ratio, 3),
                    "max": target,
                    "ok": ok,
                }
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

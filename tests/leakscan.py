"""Looking for secrets where users can read: the ledger, resources, events, logs, metrics.

A needle is a value that must never show (a credential, a data key, key material,
a plaintext); each is searched for in every spelling it could take in text. Found
needles are reported by label only: printing one in a failure would leak it.
"""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.orm import Session, sessionmaker

from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess


def spellings(secret: bytes | str) -> list[str]:
    """How `secret` could appear in text: as it is, hex, base64 (padded, unpadded, URL-safe)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    b64 = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    found = [raw.hex(), raw.hex().upper(), b64, b64.rstrip("="), urlsafe.rstrip("=")]
    if isinstance(secret, str):
        found.insert(0, secret)
    return found


@dataclass
class Needles:
    """Labelled values that must appear nowhere, each in all its spellings."""

    values: dict[str, str] = field(default_factory=dict, repr=False)

    def add(self, label: str, secret: bytes | str) -> None:
        for number, spelling in enumerate(spellings(secret)):
            self.values[f"{label} (spelling {number})"] = spelling

    def found_in(self, places: Mapping[str, str]) -> list[str]:
        return [
            f"{label} in {where}"
            for where, hay in places.items()
            for label, needle in self.values.items()
            if needle in hay
        ]


def ledger_dump(sessions: sessionmaker[Session]) -> str:
    """Every column of every row of every table of the ledger, as text (bytes also as hex)."""
    lines = []
    with sessions() as session:
        tables = inspect(session.get_bind()).get_table_names()
        for table in sorted(tables):
            for row in session.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    lines.append(str(value))
                    if isinstance(value, bytes | bytearray | memoryview):
                        lines.append(bytes(value).hex())
    return "\n".join(lines)


def cluster_dump(cp: ControlPlane) -> dict[str, str]:
    """Every keyledger resource with its status, and every event, in all namespaces."""
    return {
        "kubectl get ek,kp,ckp -A": kubectl(cp, "get", "ek,kp,ckp", "-A", "-o", "yaml").stdout,
        "kubectl get events -A": kubectl(cp, "get", "events", "-A", "-o", "yaml").stdout,
    }


def operator_logs(roots: Iterable[Path]) -> dict[str, str]:
    """The log of every operator the tests started under `roots` (OperatorProcess
    writes `operator.log` in its state directory)."""
    return {
        f"log {path}": path.read_text(errors="replace")
        for root in roots
        for path in sorted(root.rglob("operator.log"))
    }


def metrics_text(operator: OperatorProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics") as reply:
        body: bytes = reply.read()
    return body.decode()

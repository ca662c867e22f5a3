"""The dev-only local backend: a keystore file in the test's temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keyledger.providers.local.backend import LocalBackend
from tests.contract.target import ContractTarget


@contextmanager
def open_target(workdir: Path) -> Iterator[ContractTarget]:
    yield ContractTarget(
        backend=LocalBackend(workdir / "contract.json"), keeps_deletion_schedule=True
    )

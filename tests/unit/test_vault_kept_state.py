"""The state documents the vault backend keeps for drift checks, when reads and
writes of one document overlap (the schedule's passes and the provider checks
run on threads of their own).

The KV documents live in a dict here; a real server cannot be made to answer a
read in the middle of a write on demand. tests/integration/test_vault_drift_checks.py
covers the rest against OpenBao.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from keyledger.providers.vault.config import VaultAuth
from keyledger.providers.vault.session import VaultSession
from keyledger.providers.vault.state import KeyState, TransitStateStore, VersionState

KEY = "keyledger.acme.records"


class InMemoryState(TransitStateStore):
    """KV v2 documents in a dict, with check-and-set; `during_next_read` runs while
    the next read is under way, after it has fetched its document."""

    def __init__(self) -> None:
        session = VaultSession("http://vault.example:8200", VaultAuth("token", token="t"))
        super().__init__(session, mount="secret", path="keyledger", transit_mount="transit")
        self.documents: dict[str, tuple[dict[str, Any] | None, int]] = {}
        self.reads = 0
        self.during_next_read: Callable[[], None] | None = None

    def _read_document(self, path: str) -> tuple[dict[str, Any] | None, int]:
        self.reads += 1
        found = self.documents.get(path, (None, 0))
        hook, self.during_next_read = self.during_next_read, None
        if hook is not None:
            hook()
        return found

    def _write_document(self, path: str, document: dict[str, Any], *, cas: int | None) -> bool:
        version = self.documents.get(path, (None, 0))[1]
        if cas is not None and cas != version:
            return False
        self.documents[path] = (document, version + 1)
        return True


def _disable(state: KeyState) -> dict[int, VersionState]:
    return {1: replace(state.version(1), disabled=True)}


def test_what_this_process_wrote_answers_without_a_read() -> None:
    store = InMemoryState()
    store.update(KEY, _disable)
    reads = store.reads
    assert store.known(KEY).version(1).disabled
    assert store.reads == reads


def test_a_read_overlapping_a_write_keeps_nothing() -> None:
    """The read fetched the document before the write landed and finished after
    it: kept, it would hide the write until the document is read again."""
    store = InMemoryState()
    store.update(KEY, lambda state: {1: VersionState(marker="m.v1")})

    def concurrent_write() -> None:
        store.update(KEY, _disable)

    store.during_next_read = concurrent_write
    assert not store.read(KEY).version(1).disabled  # what Vault held when it was read
    assert store.known(KEY).version(1).disabled

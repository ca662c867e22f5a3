"""The keystore's in-memory indexes: versions that share their storage, so a change costs
what it touches, not what the keystore holds.

A `FrozenIndex` is a base dict plus a log of the changes made since, like the journal
file itself. Every version made from the same base shares both and sees a prefix of the
log; the newest extends the log in place, older ones go on seeing the prefix they had. So
a version never changes once made, and readers need no lock: the base is never written
after it is made, the log only grows at its end, and a key's newest change is recorded
only after the change itself is in the log. When the log outgrows a quarter of its base
it is flattened into a new base, which spreads that copy over the changes that caused it.
"""

from __future__ import annotations

import threading
from collections.abc import ItemsView, Iterator, Mapping, MutableMapping
from typing import Generic, TypeVar

V = TypeVar("V")


class _ChangeLog(Generic[V]):
    def __init__(self, base: dict[str, V]) -> None:
        self.base = base
        # (key, its new value or None if removed, the index of its previous change or -1)
        self.changes: list[tuple[str, V | None, int]] = []
        self.newest: dict[str, int] = {}  # key -> index of its newest change
        self.extending = threading.Lock()


class FrozenIndex(Mapping[str, V]):
    """A mapping that is never changed once made; `updated` makes the next version.
    Values are never None: None in a change means the key was removed."""

    __slots__ = ("_log", "_seen", "_size")

    def __init__(self, base: dict[str, V] | None = None) -> None:
        """An index holding `base`, which is the index's from now on: nobody changes it."""
        self._log: _ChangeLog[V] = _ChangeLog({} if base is None else base)
        self._seen = 0
        self._size = len(self._log.base)

    def updated(self, changes: Mapping[str, V | None]) -> FrozenIndex[V]:
        """This index with `changes` applied (None removes a key); this one stays as it is."""
        log = self._log
        with log.extending:
            newest_version = self._seen == len(log.changes)
            if newest_version and self._seen + len(changes) <= len(log.base) // 4 + 64:
                size = self._size
                for key, value in changes.items():
                    size += (value is not None) - (key in self)
                    log.changes.append((key, value, log.newest.get(key, -1)))
                    log.newest[key] = len(log.changes) - 1  # after the append: see the docstring
                return self._version(len(log.changes), size)
        # The log is long, or a newer version was made from this one: start a new base.
        base = dict(self._pairs())
        for key, value in changes.items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        return FrozenIndex(base)

    def _version(self, seen: int, size: int) -> FrozenIndex[V]:
        version: FrozenIndex[V] = FrozenIndex.__new__(FrozenIndex)
        version._log, version._seen, version._size = self._log, seen, size
        return version

    def _newest_change(self, key: str) -> int:
        """The index of the newest change to `key` this version sees, or -1."""
        changes = self._log.changes
        at = self._log.newest.get(key, -1)
        while at >= self._seen:  # changed again by a later version
            at = changes[at][2]
        return at

    def _pairs(self) -> Iterator[tuple[str, V]]:
        log = self._log
        for key, value in log.base.items():
            # Most keys are unchanged since the base: one probe, no walk.
            if key not in log.newest or (at := self._newest_change(key)) < 0:
                yield key, value
            elif (changed := log.changes[at][1]) is not None:
                yield key, changed
        for at in range(self._seen):
            key, added, _ = log.changes[at]
            if added is not None and key not in log.base and self._newest_change(key) == at:
                yield key, added

    def __getitem__(self, key: str) -> V:
        at = self._newest_change(key)
        if at < 0:
            return self._log.base[key]
        value = self._log.changes[at][1]
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._pairs())

    def __len__(self) -> int:
        return self._size

    def items(self) -> ItemsView[str, V]:
        return _Items(self)


class _Items(ItemsView[str, V]):
    _mapping: FrozenIndex[V]

    def __iter__(self) -> Iterator[tuple[str, V]]:
        return self._mapping._pairs()


class StagedChanges(MutableMapping[str, V]):
    """`base` as a change sees it: reads fall through to it, writes and removals are kept
    aside until the change is done, so staging costs what the change touches."""

    def __init__(self, base: Mapping[str, V]) -> None:
        self._base = base
        self._staged: dict[str, V | None] = {}
        self._size = len(base)

    def changes(self) -> dict[str, V | None]:
        """What was added, replaced or removed (None): nothing for a value put back as it was."""
        return {k: v for k, v in self._staged.items() if self._base.get(k) is not v}

    def __getitem__(self, key: str) -> V:
        if key not in self._staged:
            return self._base[key]
        value = self._staged[key]
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: V) -> None:
        self._size += key not in self
        self._staged[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._size -= 1
        self._staged[key] = None

    def __iter__(self) -> Iterator[str]:
        for key in self._base:
            if key not in self._staged or self._staged[key] is not None:
                yield key
        for key, value in self._staged.items():
            if value is not None and key not in self._base:
                yield key

    def __len__(self) -> int:
        return self._size

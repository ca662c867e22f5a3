"""Per-version state that keyledger keeps next to each transit key, in a KV v2 mount.

Transit has no per-version enabled flag, no tags to hold an idempotency marker
and no deletion schedule: only `min_decryption_version`, which blocks every
version below it. So keyledger records, in a KV v2 mount of the same Vault
(`spec.vault.stateMount`, under `spec.vault.statePath`):

    <statePath>/keys/<transit mount>/<transit key>
        {"versions": {"<N>": {"marker": "<ledger-row-uuid>.v<N>",
                              "disabled": false, "deletionDate": null}}}
    <statePath>/markers/<marker>
        {"mount": "<transit mount>", "key": "<transit key>", "version": N}
    <statePath>/deletions/<transit mount>
        {"keys": {"<transit key>": {"<N>": "<deletion date>"}}}

The first document is what describe/enable/disable/schedule_deletion act on and
what generate/unwrap consult before every call; the second finds a version by
marker alone (crash recovery); the third lists the versions scheduled for
deletion and not destroyed yet, because keyledger's policy grants no `list` to
find them otherwise. The key's document is the authority on a deletion date; the
list is written after it. Writes use KV v2 check-and-set, so two operator
replicas never lose each other's update.

A drift check needs the first document too, and reading it costs as much as
reading the transit key; `known` serves it from what this process last read or
wrote instead (see there). Every other read goes to Vault.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import hvac

from keyledger.errors import ProviderError
from keyledger.providers.vault.session import VaultSession

_MARKER = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}$")
_CAS_ATTEMPTS = 5
# How long `known` may answer from a kept document before it reads Vault again.
KEPT_FOR_S = 3600.0


class TransitVersionConflict(ProviderError):
    """Transit and the ledger disagree about a version; waiting will not fix it."""

    reason = "TransitVersionConflict"
    retryable = False


@dataclass(frozen=True)
class VersionState:
    marker: str | None = None
    disabled: bool = False
    deletion_date: datetime | None = None

    @property
    def refused(self) -> bool:
        """keyledger refuses crypto with this version (disabled or scheduled for deletion)."""
        return self.disabled or self.deletion_date is not None

    def due(self, now: datetime) -> bool:
        """Scheduled for deletion, and the date has passed."""
        return self.deletion_date is not None and self.deletion_date <= now

    def to_json(self) -> dict[str, Any]:
        return {
            "marker": self.marker,
            "disabled": self.disabled,
            "deletionDate": self.deletion_date.isoformat() if self.deletion_date else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VersionState:
        deletion = data.get("deletionDate")
        return cls(
            marker=data.get("marker"),
            disabled=bool(data.get("disabled", False)),
            deletion_date=datetime.fromisoformat(deletion) if deletion else None,
        )


@dataclass(frozen=True)
class KeyState:
    """A transit key's document; `cas` is the KV version it was read at (0: none yet)."""

    versions: Mapping[int, VersionState] = field(default_factory=dict)
    cas: int = 0

    def version(self, number: int) -> VersionState:
        return self.versions.get(number, VersionState())


def raised_floor(state: KeyState, *, current: int, latest: int) -> int:
    """The min_decryption_version that also blocks the oldest run of refused versions.

    Transit can refuse only a prefix of versions, and only ever below the latest
    one. Versions below `current` are already blocked (by keyledger or by an
    admin), so the floor never moves down here; refused versions above the first
    usable one are refused by keyledger's own check, not by transit.
    """
    floor = max(current, 1)
    while floor < latest and state.version(floor).refused:
        floor += 1
    return floor


def due_prefix(state: KeyState, now: datetime, *, first: int, latest: int) -> range:
    """The oldest versions, from `first` (the oldest transit still has), that are all due.

    Transit destroys only these: it trims versions below min_available_version,
    or deletes the key when the run reaches `latest`. A due version with an
    older one not due cannot be destroyed yet.
    """
    end = first
    while end <= latest and state.version(end).due(now):
        end += 1
    return range(first, end)


# The versions scheduled for deletion on one transit mount: transit key -> version -> date.
DeletionSchedule = dict[str, dict[int, datetime]]


class TransitStateStore:
    def __init__(
        self,
        session: VaultSession,
        *,
        mount: str,
        path: str,
        transit_mount: str,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.session = session
        self.mount = mount
        self.path = path.strip("/")
        self.transit_mount = transit_mount
        self._clock = clock
        # Transit key -> (when, its document as this process last read or wrote it).
        self._kept: dict[str, tuple[float, KeyState]] = {}
        # Key documents this process has written; a read or write that saw the
        # count change while it ran cannot tell whether its document is the newer.
        self._writes = 0
        self._kept_lock = threading.Lock()

    def read(self, key: str) -> KeyState:
        """The key's document as Vault holds it now."""
        started = self._writes
        state = _key_state(*self._read_document(self._key_path(key)))
        self._keep(key, state, started)
        return state

    def known(self, key: str) -> KeyState:
        """The key's document as this process last read or wrote it; read if it has
        none, or has had it for KEPT_FOR_S.

        What was kept is what Vault holds: only keyledger writes these documents,
        only the operator acting on the key writes its document (an HA peer stands
        by, paused; the client library only reads), and every write this process
        makes goes through `update` or `forget`, which keep what they wrote. A
        replica that starts, or resumes after a pause (the operator drops its open
        backends then), has nothing kept and reads. The age limit bounds what this
        misses: a peer's write in the seconds two replicas overlap at a hand-over,
        a document restored by hand. The transit key itself is never kept here: a
        drift check reads it every time, so changes made to it outside keyledger show.
        """
        with self._kept_lock:
            kept = self._kept.get(key)
        if kept is not None and self._clock() - kept[0] < KEPT_FOR_S:
            return kept[1]
        return self.read(key)

    def update(
        self, key: str, change: Callable[[KeyState], Mapping[int, VersionState]]
    ) -> KeyState:
        """Apply `change` (state -> versions to write) with check-and-set; re-read on a race."""

        def apply(data: dict[str, Any] | None, cas: int) -> dict[str, Any]:
            state = _key_state(data, cas)
            changed = {**state.versions, **change(state)}
            return {"versions": {str(n): v.to_json() for n, v in sorted(changed.items())}}

        return self._write(key, apply)

    def forget(self, key: str) -> None:
        """Drop every version's state: the transit key was deleted."""

        def drop(data: dict[str, Any] | None, _: int) -> dict[str, Any] | None:
            return {"versions": {}} if data and data.get("versions") else None

        self._write(key, drop)

    def read_deletion_schedule(self) -> DeletionSchedule:
        data, _ = self._read_document(self._deletions_path())
        return _deletion_schedule(data)

    def add_to_deletion_schedule(self, key: str, version: int, when: datetime) -> None:
        def add(data: dict[str, Any] | None, _: int) -> dict[str, Any] | None:
            schedule = _deletion_schedule(data)
            if schedule.get(key, {}).get(version) == when:
                return None
            schedule.setdefault(key, {})[version] = when
            return _schedule_document(schedule)

        self._update_document(self._deletions_path(), add)

    def remove_from_deletion_schedule(self, key: str, versions: Collection[int]) -> None:
        def remove(data: dict[str, Any] | None, _: int) -> dict[str, Any] | None:
            schedule = _deletion_schedule(data)
            kept = {n: d for n, d in schedule.get(key, {}).items() if n not in versions}
            if kept == schedule.get(key, {}):
                return None
            schedule[key] = kept
            return _schedule_document(schedule)

        self._update_document(self._deletions_path(), remove)

    def claim(self, key: str, version: int, marker: str) -> KeyState:
        """Record `marker` as the creator of `version`; refuse if another marker holds it."""
        self._check_marker(marker)

        def take(state: KeyState) -> dict[int, VersionState]:
            held_by = state.version(version).marker
            if held_by not in (None, marker):
                raise TransitVersionConflict(
                    f"version {version} of transit key {self.transit_mount}/{key} was already "
                    f"created for another ledger row (marker {held_by}, not {marker}): another "
                    "keyledger ledger uses this Vault key. Use another keyName, or another "
                    "spec.vault.statePath/mount for that ledger"
                )
            return {version: replace(state.version(version), marker=marker)}

        state = self.update(key, take)
        # The index is written after the claim, so a crash between the two is
        # repaired by the retry, which finds its own claim and writes it again.
        self._write_document(
            self._marker_path(marker),
            {"mount": self.transit_mount, "key": key, "version": version},
            cas=None,
        )
        return state

    def find_marker(self, marker: str) -> tuple[str, int] | None:
        """The (transit key, version) claimed by `marker` on this transit mount, if any."""
        self._check_marker(marker)
        data, _ = self._read_document(self._marker_path(marker))
        if not data or data.get("mount") != self.transit_mount:
            return None
        return str(data["key"]), int(data["version"])

    def _write(
        self, key: str, change: Callable[[dict[str, Any] | None, int], dict[str, Any] | None]
    ) -> KeyState:
        """`_update_document` on the key's document, keeping what it wrote."""
        started = self._writes
        try:
            state = _key_state(*self._update_document(self._key_path(key), change))
        except BaseException:
            # The write may have landed (an answer lost to a timeout): keep nothing.
            self._keep(key, None, started, wrote=True)
            raise
        self._keep(key, state, started, wrote=True)
        return state

    def _keep(self, key: str, state: KeyState | None, started: int, *, wrote: bool = False) -> None:
        """Keep `state`, read or written by a call that began when `_writes` was
        `started`; keep nothing if another write ended meanwhile, since either
        document may be the newer (the next `known` reads)."""
        with self._kept_lock:
            if state is not None and self._writes == started:
                self._kept[key] = (self._clock(), state)
            else:
                self._kept.pop(key, None)
            if wrote:
                self._writes += 1

    # -- KV v2 ----------------------------------------------------------------

    def _key_path(self, key: str) -> str:
        return f"{self.path}/keys/{self.transit_mount}/{key}"

    def _deletions_path(self) -> str:
        return f"{self.path}/deletions/{self.transit_mount}"

    def _marker_path(self, marker: str) -> str:
        return f"{self.path}/markers/{marker}"

    def _check_marker(self, marker: str) -> None:
        if not _MARKER.match(marker):
            raise ProviderError(
                f"idempotency marker {marker!r} cannot name a Vault KV path "
                "(letters, digits, '_', '.', '-'; at most 200)",
                reason="InvalidMarker",
            )

    def _read_document(self, path: str) -> tuple[dict[str, Any] | None, int]:
        response = self.session.read(
            f"reading keyledger state {self.mount}/{path}",
            lambda client: client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.mount, raise_on_deleted_version=False
            ),
        )
        if response is None:
            return None, 0
        # A deleted document still has a KV version, which check-and-set must name.
        return response["data"]["data"], int(response["data"]["metadata"]["version"])

    def _update_document(
        self, path: str, change: Callable[[dict[str, Any] | None, int], dict[str, Any] | None]
    ) -> tuple[dict[str, Any] | None, int]:
        """Apply `change` (document, KV version -> document to write, or None to leave it)
        with check-and-set, re-reading on a race; the resulting document and KV version."""
        for _ in range(_CAS_ATTEMPTS):
            data, cas = self._read_document(path)
            document = change(data, cas)
            if document is None:
                return data, cas
            if self._write_document(path, document, cas=cas):
                return document, cas + 1
        raise ProviderError(
            f"the keyledger state {self.mount}/{path} kept changing under concurrent writers; "
            "retrying later",
            reason="VaultStateContention",
        )

    def _write_document(self, path: str, document: dict[str, Any], *, cas: int | None) -> bool:
        """False when check-and-set lost a race."""

        def write(client: Any) -> bool:
            try:
                client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=document, cas=cas, mount_point=self.mount
                )
            except hvac.exceptions.InvalidRequest as error:
                if "check-and-set" in str(error):
                    return False
                raise
            return True

        return self.session.call(f"writing keyledger state {self.mount}/{path}", write)


def _key_state(data: Mapping[str, Any] | None, cas: int) -> KeyState:
    versions = {
        int(number): VersionState.from_json(entry)
        for number, entry in (data or {}).get("versions", {}).items()
    }
    return KeyState(versions=versions, cas=cas)


def _deletion_schedule(data: Mapping[str, Any] | None) -> DeletionSchedule:
    return {
        key: {int(n): datetime.fromisoformat(when) for n, when in versions.items()}
        for key, versions in (data or {}).get("keys", {}).items()
    }


def _schedule_document(schedule: DeletionSchedule) -> dict[str, Any]:
    return {
        "keys": {
            key: {str(n): when.isoformat() for n, when in sorted(versions.items())}
            for key, versions in sorted(schedule.items())
            if versions
        }
    }

"""Re-sealing many ciphertexts under their key's current version, resumably.

After a compromise (or before a rotated version is destroyed) every blob sealed
under the old version has to be sealed again. The caller says where the blobs
are (a `RewrapSource`: files, a table, anything it can iterate and write back);
`rewrap_all` re-seals each, writes it back, and notes its id in a journal. An
interrupted run is simply run again: journaled items are skipped, and an item
re-sealed but not yet journaled is found already current and left alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from sqlalchemy import Engine, MetaData, Table, select, update

from keyledger.client.breakglass import BreakGlass
from keyledger.client.client import KeyledgerClient
from keyledger.client.envelope import FORMAT_STREAM, Blob
from keyledger.errors import KeyledgerError
from keyledger.failpoints import failpoint


@dataclass(frozen=True)
class Sealed:
    id: str  # stable across runs: a primary key, a path
    blob: bytes = field(repr=False)
    context: Mapping[str, str]
    tenant: str
    # How the source finds the item again (e.g. the typed primary key), if not by id.
    ref: object = field(default=None, compare=False)
    # A stream (a backup) in the file `id`, re-sealed file to file, never read whole:
    # `blob` is empty then, and the source's replace is not called.
    stream: bool = False


class RewrapSource(Protocol):
    def items(self) -> Iterable[Sealed]: ...

    def replace(self, item: Sealed, blob: Blob) -> None:
        """Store `blob` in place of `item.blob` (atomically, where the store allows)."""


@dataclass
class Progress:
    seen: int = 0
    rewrapped: int = 0
    already_current: int = 0
    done_before: int = 0  # journaled by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # id -> error reason

    def summary(self) -> dict[str, object]:
        return {
            "seen": self.seen,
            "rewrapped": self.rewrapped,
            "alreadyCurrent": self.already_current,
            "doneBefore": self.done_before,
            "failed": len(self.failed),
        }


class Journal:
    """Ids of finished items, one per line, appended and synced in batches."""

    def __init__(self, path: Path, sync_every: int = 100) -> None:
        self.path = path
        data = path.read_bytes() if path.exists() else b""
        # A line counts only once its newline is written: the tail of a run killed
        # in the middle of one (a prefix of some id) is cut off, never completed.
        finished = data[: data.rfind(b"\n") + 1]
        if len(finished) < len(data):
            with path.open("r+b") as torn:
                torn.truncate(len(finished))
        self.done = set(finished.decode("utf-8").splitlines())
        self._file = path.open("a", encoding="utf-8")
        self._sync_every = sync_every
        self._unsynced = 0

    def add(self, item_id: str) -> None:
        if "\n" in item_id:
            raise ValueError("rewrap item ids must be single lines")
        self._file.write(item_id + "\n")
        self.done.add(item_id)
        self._unsynced += 1
        if self._unsynced >= self._sync_every:
            self.sync()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._unsynced = 0

    def close(self) -> None:
        self.sync()
        self._file.close()


def rewrap_all(
    client: KeyledgerClient,
    source: RewrapSource,
    journal: Journal,
    *,
    break_glass: BreakGlass | None = None,
    keep_going: bool = False,
    max_items: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: int = 100,
) -> Progress:
    """Re-seal what `source` yields; `max_items` stops after that many (a maintenance
    window), to be resumed by the next run. Errors stop the run unless `keep_going`,
    which records the item's id and the error's reason and carries on."""
    progress = Progress()
    try:
        for item in source.items():
            if item.id in journal.done:
                progress.done_before += 1
                continue
            if max_items is not None and progress.seen >= max_items:
                break
            progress.seen += 1
            try:
                changed = _rewrap_item(client, source, item, break_glass)
            except KeyledgerError as error:
                if not keep_going:
                    raise
                progress.failed[item.id] = error.reason
                continue
            if changed:
                failpoint("rewrap.after-replace")
                progress.rewrapped += 1
            else:
                progress.already_current += 1
            journal.add(item.id)
            if on_progress is not None and progress.seen % progress_every == 0:
                on_progress(progress)
    finally:
        journal.sync()
    if on_progress is not None:
        on_progress(progress)
    return progress


def _rewrap_item(
    client: KeyledgerClient, source: RewrapSource, item: Sealed, glass: BreakGlass | None
) -> bool:
    """Re-seal one item and store it; whether it had to change."""
    if item.stream:
        path = Path(item.id)
        with path.open("rb") as src, _staged(path) as dst:
            return client.rewrap_stream(
                src, dst, item.context, tenant=item.tenant, break_glass=glass
            )
    blob = client.rewrap(item.blob, item.context, tenant=item.tenant, break_glass=glass)
    if blob is item.blob:
        return False
    source.replace(item, blob)
    return True


@contextmanager
def _staged(path: Path) -> Iterator[BinaryIO]:
    """A file that replaces `path` atomically (the old or the new, never half of one)
    if something was written to it and no error came; otherwise it goes away."""
    staged = path.with_name(f".{path.name}.rewrap")
    try:
        with staged.open("wb") as out:
            yield out
            written = out.tell() > 0
            out.flush()
            os.fsync(out.fileno())
        if written:
            staged.replace(path)
    finally:
        staged.unlink(missing_ok=True)


@dataclass
class FileSource:
    """Files each holding one sealed record or one stream, all of one tenant and one
    context."""

    paths: list[Path]
    tenant: str
    context: Mapping[str, str]

    def items(self) -> Iterator[Sealed]:
        for path in sorted(self.paths):
            with path.open("rb") as file:
                start = file.read(4)
            if start[3:4] == bytes([FORMAT_STREAM]):
                yield Sealed(str(path), b"", self.context, self.tenant, stream=True)
            else:
                yield Sealed(str(path), path.read_bytes(), self.context, self.tenant)

    def replace(self, item: Sealed, blob: Blob) -> None:
        with _staged(Path(item.id)) as out:
            out.write(blob)


@dataclass
class TableSource:
    """A table column of sealed records, walked in primary-key order, a page at a time.

    Each record's context is its `context_columns` (as strings), plus `context`.
    The write-back only lands if the row still holds the blob that was read, so a
    row the application changed meanwhile is left to it (and to the next run)."""

    engine: Engine
    table: str
    id_column: str
    blob_column: str
    tenant: str
    context_columns: tuple[str, ...] = ()
    context: Mapping[str, str] = field(default_factory=dict)
    page: int = 500

    def __post_init__(self) -> None:
        self._table = Table(self.table, MetaData(), autoload_with=self.engine)

    def items(self) -> Iterator[Sealed]:
        key = self._table.c[self.id_column]
        blob = self._table.c[self.blob_column]
        extra = [self._table.c[name] for name in self.context_columns]
        last: object = None
        while True:
            query = select(key, blob, *extra).order_by(key).limit(self.page)
            if last is not None:
                query = query.where(key > last)
            with self.engine.connect() as connection:
                rows = connection.execute(query).all()
            if not rows:
                return
            for row in rows:
                context = {**self.context}
                context.update(
                    {name: str(row[2 + i]) for i, name in enumerate(self.context_columns)}
                )
                yield Sealed(str(row[0]), bytes(row[1]), context, self.tenant, ref=row[0])
            last = rows[-1][0]

    def replace(self, item: Sealed, blob: Blob) -> None:
        key = self._table.c[self.id_column]
        column = self._table.c[self.blob_column]
        with self.engine.begin() as connection:
            connection.execute(
                update(self._table)
                .where(key == item.ref, column == item.blob)
                .values({self.blob_column: blob})
            )

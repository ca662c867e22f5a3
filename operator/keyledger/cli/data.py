"""`keyledger encrypt|decrypt|rewrap`: the client library from the command line.

For backup scripts and re-encryption jobs. The ledger is KEYLEDGER_DATABASE_URL;
each `--kms FILE` opens one backend with the caller's own credentials, from a
KeyProvider / ClusterKeyProvider manifest or its spec (exactly one backend field),
with an optional top-level `credentials:` map standing in for the Secret.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

from keyledger.client import BreakGlass, KeyledgerClient
from keyledger.client.envelope import FORMAT_STREAM
from keyledger.client.provider_files import open_provider_file
from keyledger.client.rewrap import (
    FileSource,
    Journal,
    Progress,
    RewrapSource,
    TableSource,
    rewrap_all,
)
from keyledger.errors import KeyledgerError
from keyledger.settings import get_settings
from keyledger.store.engine import make_engine


def add_commands(commands: Any) -> None:
    """Register the subcommands on `keyledger`'s subparsers."""
    encrypt = commands.add_parser("encrypt", help="seal a file or stdin as a keyledger stream")
    encrypt.add_argument("--tenant", required=True)
    encrypt.add_argument("--key", required=True, help="the key's spec.keyName")
    _io_options(encrypt)

    decrypt = commands.add_parser("decrypt", help="open a keyledger stream or record")
    decrypt.add_argument("--tenant", required=True, help="the tenant the data must belong to")
    _io_options(decrypt)
    _break_glass_options(decrypt)

    rewrap = commands.add_parser(
        "rewrap", help="re-seal ciphertexts under their key's ACTIVE version, resumably"
    )
    rewrap.add_argument("--tenant", required=True)
    rewrap.add_argument("--kms", type=Path, action="append", required=True, metavar="FILE")
    rewrap.add_argument("--context", action="append", default=[], metavar="NAME=VALUE")
    rewrap.add_argument(
        "--journal",
        type=Path,
        required=True,
        help="file noting what is done; run again with the same journal to resume",
    )
    where = rewrap.add_mutually_exclusive_group(required=True)
    where.add_argument("--files", type=Path, nargs="+", help="files, each one sealed record")
    where.add_argument("--table", help="a table of sealed records (see --database-url)")
    where.add_argument(
        "--source",
        metavar="MODULE:FACTORY",
        help="your own iterator: FACTORY(tenant, context) returns a RewrapSource",
    )
    rewrap.add_argument("--database-url", help="the database holding --table")
    rewrap.add_argument("--id-column", default="id")
    rewrap.add_argument("--blob-column", default="ciphertext")
    rewrap.add_argument(
        "--context-column",
        action="append",
        default=[],
        help="a column whose value is part of each record's context (under its own name)",
    )
    rewrap.add_argument("--max-items", type=int, help="stop after this many; resume later")
    rewrap.add_argument(
        "--keep-going", action="store_true", help="note items that fail and carry on"
    )
    _break_glass_options(rewrap)


def run(args: argparse.Namespace) -> int:
    try:
        match args.command:
            case "encrypt":
                return _encrypt(args)
            case "decrypt":
                return _decrypt(args)
            case _:
                return _rewrap(args)
    except KeyledgerError as error:
        print(f"keyledger {args.command}: {error.reason}: {error.message}", file=sys.stderr)
        return 1


def _io_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="src", default="-", help="file to read (default: stdin)")
    parser.add_argument("--out", dest="dst", default="-", help="file to write (default: stdout)")
    parser.add_argument("--context", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--kms", type=Path, action="append", required=True, metavar="FILE")


def _break_glass_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--break-glass-reason",
        help="open data under a COMPROMISED version; audited with --break-glass-actor",
    )
    parser.add_argument("--break-glass-actor", help="who is accountable for the break glass")


def _encrypt(args: argparse.Namespace) -> int:
    with _client(args) as client, _input(args.src) as src, _output(args.dst) as dst:
        client.encrypt_stream(args.tenant, args.key, src, dst, _context(args.context))
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    with _client(args) as client, _input(args.src) as src, _output(args.dst) as dst:
        glass = _break_glass(args)
        start = src.read(4)  # magic and format: a stream, or one record
        if start[3:4] == bytes([FORMAT_STREAM]):
            client.decrypt_stream(
                _Prefixed(start, src),
                dst,
                _context(args.context),
                tenant=args.tenant,
                break_glass=glass,
            )
        else:
            blob = start + src.read()
            dst.write(
                client.decrypt(blob, _context(args.context), tenant=args.tenant, break_glass=glass)
            )
    return 0


class _Prefixed:
    """`src` with `prefix` put back in front of it."""

    def __init__(self, prefix: bytes, src: IO[bytes]) -> None:
        self._prefix = prefix
        self._src = src

    def read(self, size: int = -1, /) -> bytes:
        if not self._prefix:
            return self._src.read(size)
        if size < 0:
            head, self._prefix = self._prefix, b""
            return head + self._src.read()
        head, self._prefix = self._prefix[:size], self._prefix[size:]
        return head


def _rewrap(args: argparse.Namespace) -> int:
    context = _context(args.context)
    source: RewrapSource
    if args.files:
        source = FileSource(list(args.files), args.tenant, context)
    elif args.source:
        source = _caller_source(args.source, args.tenant, context)
    else:
        if not args.database_url:
            raise SystemExit("keyledger rewrap: --table needs --database-url")
        source = TableSource(
            make_engine(args.database_url),
            args.table,
            args.id_column,
            args.blob_column,
            args.tenant,
            tuple(args.context_column),
            context,
        )

    def report(progress: Progress) -> None:
        print(f"rewrap: {json.dumps(progress.summary())}", file=sys.stderr, flush=True)

    journal = Journal(args.journal)
    try:
        with _client(args) as client:
            progress = rewrap_all(
                client,
                source,
                journal,
                break_glass=_break_glass(args),
                keep_going=args.keep_going,
                max_items=args.max_items,
                on_progress=report,
            )
    finally:
        journal.close()
    print(json.dumps({**progress.summary(), "failedItems": progress.failed}))
    return 1 if progress.failed else 0


def _caller_source(spec: str, tenant: str, context: Mapping[str, str]) -> RewrapSource:
    module_name, _, factory_name = spec.partition(":")
    if not module_name or not factory_name:
        raise SystemExit(f"--source {spec!r}: expected MODULE:FACTORY, e.g. myapp.rewrap:notes")
    factory = getattr(importlib.import_module(module_name), factory_name, None)
    if not callable(factory):
        raise SystemExit(f"--source {spec!r}: {module_name} has no callable {factory_name}")
    source = factory(tenant, context)
    if not callable(getattr(source, "items", None)) or not callable(
        getattr(source, "replace", None)
    ):
        raise SystemExit(f"--source {spec!r}: the factory must return a RewrapSource")
    return cast(RewrapSource, source)


@contextmanager
def _client(args: argparse.Namespace) -> Iterator[KeyledgerClient]:
    backends = [open_provider_file(path, get_settings()) for path in args.kms]
    try:
        # One command, one short life: no listener, the ledger is read as needed.
        with KeyledgerClient(get_settings().ledger_url(), backends, listen=False) as client:
            yield client
    finally:
        for backend in backends:
            backend.close()


def _context(pairs: Sequence[str]) -> Mapping[str, str]:
    context = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--context {pair!r}: expected NAME=VALUE")
        context[name] = value
    return context


def _break_glass(args: argparse.Namespace) -> BreakGlass | None:
    if args.break_glass_reason is None and args.break_glass_actor is None:
        return None
    if not args.break_glass_reason or not args.break_glass_actor:
        raise SystemExit("break glass needs both --break-glass-reason and --break-glass-actor")
    return BreakGlass(actor=args.break_glass_actor, reason=args.break_glass_reason)


@contextmanager
def _input(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdin.buffer
        return
    with open(name, "rb") as src:
        yield src


@contextmanager
def _output(name: str) -> Iterator[IO[bytes]]:
    """stdout, or a file that appears only when everything was written and checked:
    a decrypt that fails half-way leaves no half-opened file behind."""
    if name == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(name)
    staged = target.with_name(f".{target.name}.partial")
    try:
        with staged.open("wb") as dst:
            yield dst
            dst.flush()
            os.fsync(dst.fileno())
        staged.replace(target)
    finally:
        staged.unlink(missing_ok=True)

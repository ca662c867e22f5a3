"""A throwaway PostgreSQL server for the tests, from Debian's `postgresql` package.

`start_postgres` runs initdb and pg_ctl from the newest /usr/lib/postgresql/*/bin
into a temp dir: trust auth, 127.0.0.1 only, a free port, fsync off. PostgreSQL
refuses to run as root, so as root the server runs as the `postgres` user.
Or, with KEYLEDGER_TEST_POSTGRES_URL set, `use_existing_server` points the tests
at a server someone else runs.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from sqlalchemy.engine import URL, make_url

from tests.harness.net import free_port

EXISTING_SERVER_ENV = "KEYLEDGER_TEST_POSTGRES_URL"
DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"  # both the OS user (as root) and the superuser role

_INITDB_TIMEOUT_S = 120
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 60
_START_ATTEMPTS = 3  # another process may take the free port before the server binds it
# Unix socket paths are limited to 107 bytes; ".s.PGSQL.NNNNN" takes 15 of them.
_MAX_SOCKET_DIR_LEN = 90


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    """A reachable PostgreSQL server and a superuser to create databases with.

    run_dir is None for a server we did not start and must not stop.
    """

    host: str
    port: int
    user: str = SERVER_USER
    password: str | None = None
    admin_database: str = "postgres"
    run_dir: Path | None = None
    bin_dir: Path | None = None
    # True when run_dir is a temp dir of our own (not under the caller's base dir).
    owns_run_dir: bool = False

    def url(self, dbname: str) -> str:
        return URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=dbname,
        ).render_as_string(hide_password=False)

    @property
    def data_dir(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "data"

    @property
    def log_file(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "postgres.log"


def find_postgres_bin_dir() -> Path:
    """The bin dir of the newest PostgreSQL under /usr/lib/postgresql."""
    candidates = [
        path.parent
        for path in DEBIAN_POSTGRES_ROOT.glob("*/bin/pg_ctl")
        if path.parent.parent.name.isdigit() and (path.parent / "initdb").is_file()
    ]
    if not candidates:
        raise RuntimeError(
            f"no PostgreSQL server binaries (initdb, pg_ctl) under {DEBIAN_POSTGRES_ROOT}/*/bin: "
            "run `make test`, which installs Debian's postgresql package, or set "
            f"{EXISTING_SERVER_ENV} to a server the tests may create databases on"
        )
    return max(candidates, key=lambda bin_dir: int(bin_dir.parent.name))


def use_existing_server(url: str) -> PostgresServer:
    """A server someone else runs; its URL names a database to connect to for admin work."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.host:
        raise RuntimeError(
            f"{EXISTING_SERVER_ENV} must be a postgresql:// URL with a host, e.g. "
            "postgresql://postgres@127.0.0.1:5432/postgres"
        )
    return PostgresServer(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username or SERVER_USER,
        password=parsed.password,
        admin_database=parsed.database or "postgres",
    )


def start_postgres(base_dir: Path) -> PostgresServer:
    """initdb and start a server whose files live under base_dir (or a temp dir, see below)."""
    bin_dir = find_postgres_bin_dir()
    run_dir, owns_run_dir = _make_run_dir(base_dir)
    try:
        _initdb(bin_dir, run_dir)
        for attempt in range(1, _START_ATTEMPTS + 1):
            server = PostgresServer(
                host="127.0.0.1",
                port=free_port(),
                run_dir=run_dir,
                bin_dir=bin_dir,
                owns_run_dir=owns_run_dir,
            )
            try:
                _pg_ctl(server, "start", "-o", f"-p {server.port}", "-t", str(_START_TIMEOUT_S))
            except RuntimeError as error:
                if attempt < _START_ATTEMPTS and "already in use" in str(error):
                    continue
                raise
            return server
    except BaseException:
        if owns_run_dir:
            # The error carries the log; nothing else in there is worth keeping.
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    raise AssertionError("unreachable")  # the loop returns or raises


def stop_postgres(server: PostgresServer) -> None:
    """Stop a server started by start_postgres; a server we did not start is left alone."""
    if server.run_dir is None:
        return
    try:
        _pg_ctl(server, "stop", "-m", "fast", "-t", str(_STOP_TIMEOUT_S))
    finally:
        if server.owns_run_dir:
            shutil.rmtree(server.run_dir, ignore_errors=True)


def pause_postgres(server: PostgresServer) -> None:
    """Stop a server started by start_postgres and keep its data: an outage."""
    _pg_ctl(server, "stop", "-m", "fast", "-t", str(_STOP_TIMEOUT_S))


def resume_postgres(server: PostgresServer) -> None:
    """Start a paused server again, on its port."""
    _pg_ctl(server, "start", "-o", f"-p {server.port}", "-t", str(_START_TIMEOUT_S))


def create_database(server: PostgresServer, name: str) -> str:
    """Create an empty database and return its SQLAlchemy URL."""
    with _admin_connection(server) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.url(name)


def drop_database(server: PostgresServer, name: str) -> None:
    """Drop a database, closing whatever connections a test left open to it."""
    with _admin_connection(server) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _admin_connection(server: PostgresServer) -> psycopg.Connection[TupleRow]:
    return psycopg.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        dbname=server.admin_database,
        autocommit=True,  # CREATE/DROP DATABASE cannot run in a transaction
        connect_timeout=10,
    )


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if _running_as_root() else command


def _make_run_dir(base_dir: Path) -> tuple[Path, bool]:
    """The server's dir: base_dir/postgres when the server can use it, else a temp dir.

    As root, the server runs as `postgres`, which cannot enter pytest's 0700 temp
    dirs; and a long base_dir would overflow the unix socket path limit. Either
    way the server gets a fresh dir in the system temp dir, removed on stop.
    """
    run_dir = base_dir.resolve() / "postgres"
    owned = False
    too_long = len(str(run_dir / "socket")) > _MAX_SOCKET_DIR_LEN
    if too_long or (_running_as_root() and not _server_user_can_enter(base_dir)):
        run_dir = Path(tempfile.mkdtemp(prefix="keyledger-postgres-"))
        owned = True
    else:
        run_dir.mkdir(mode=0o700)
    (run_dir / "socket").mkdir(mode=0o700)
    if _running_as_root():
        account = _server_account()
        for path in (run_dir, run_dir / "socket"):
            os.chown(path, account.pw_uid, account.pw_gid)
    return run_dir, owned


def _server_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root, but there is no `{SERVER_USER}` user to run PostgreSQL as: "
            "run `make test`, which installs Debian's postgresql package (it creates the user)"
        ) from None


def _server_user_can_enter(directory: Path) -> bool:
    _server_account()
    result = subprocess.run(
        _as_server_user(["test", "-x", str(directory)]),
        check=False,
        capture_output=True,
    )
    return result.returncode == 0


def _initdb(bin_dir: Path, run_dir: Path) -> None:
    data_dir = run_dir / "data"
    _run(
        [
            str(bin_dir / "initdb"),
            f"--pgdata={data_dir}",
            f"--username={SERVER_USER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        cwd=run_dir,
        timeout=_INITDB_TIMEOUT_S,
        what="initdb",
    )
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{run_dir / 'socket'}'",
        # Durability is worthless for a throwaway server; speed is not.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
    }
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\n# keyledger test harness\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    # Trust, but only from this machine: the socket dir and 127.0.0.1.
    (data_dir / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")


def _pg_ctl(server: PostgresServer, action: str, *options: str) -> None:
    assert server.bin_dir is not None
    assert server.run_dir is not None
    _run(
        [
            str(server.bin_dir / "pg_ctl"),
            f"--pgdata={server.data_dir}",
            f"--log={server.log_file}",
            "--wait",
            *options,
            action,
        ],
        cwd=server.run_dir,
        timeout=_START_TIMEOUT_S + 30,
        what=f"pg_ctl {action}",
        log_file=server.log_file,
    )


def _run(
    command: list[str], *, cwd: Path, timeout: float, what: str, log_file: Path | None = None
) -> None:
    try:
        result = subprocess.run(
            _as_server_user(command),
            cwd=cwd,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{what} did not finish in {timeout} s{_log_tail(log_file)}") from error
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode})\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}{_log_tail(log_file)}"
        )


def _log_tail(log_file: Path | None, lines: int = 30) -> str:
    if log_file is None or not log_file.is_file():
        return ""
    tail = log_file.read_text(errors="replace").splitlines()[-lines:]
    return f"\nserver log ({log_file}):\n" + "\n".join(tail)

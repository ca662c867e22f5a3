"""Row-level security on a real PostgreSQL: a service's database role sees only the
tenants granted to it, whatever scope it sets itself; the client sets the scope
from the tenant it is asked for and refuses one outside the grant."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from keyledger.client import BreakGlass, KeyledgerClient
from keyledger.client.envelope import seal
from keyledger.domain import KeyEventType
from keyledger.errors import KeyNotUsable, TenantMismatch, TenantNotGranted, VersionCompromised
from keyledger.store.audit import verify_chains
from keyledger.store.engine import make_engine, make_session_factory
from keyledger.store.grants import grant_tenant, revoke_tenant
from keyledger.store.repository import KeyLedger
from tests.integration.ledger_history import NOW, History, write_history

pytestmark = pytest.mark.postgres
postgresql_only = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)

TABLES = ("encryption_keys", "key_events", "handled_requests")
SET_SCOPE = text("SELECT set_config('keyledger.tenant', :t, true)")
SCOPE = text("SELECT current_setting('keyledger.tenant', true)")


@pytest.fixture
def service_role(ledger_url: str, ledger_engine: Engine) -> Iterator[str]:
    """A login role with the privileges a service gets, and no tenant granted yet.

    Roles belong to the whole server: the name is unique, and the role goes at the end."""
    role = f"svc_{uuid.uuid4().hex[:12]}"
    with ledger_engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN"))
        connection.execute(text(f"GRANT SELECT ON {', '.join(TABLES)}, tenant_grants TO {role}"))
        connection.execute(text(f"GRANT UPDATE (last_used_at) ON encryption_keys TO {role}"))
    yield role
    with ledger_engine.begin() as connection:
        connection.execute(text(f"DROP OWNED BY {role}"))
        connection.execute(text(f"DROP ROLE {role}"))


@pytest.fixture
def connect_as(ledger_url: str) -> Iterator[Callable[[str], Engine]]:
    engines: list[Engine] = []

    def _connect(role: str) -> Engine:
        url = make_url(ledger_url).set(username=role, password=None)
        engines.append(make_engine(url))
        return engines[-1]

    yield _connect
    for engine in engines:
        engine.dispose()


@pytest.fixture
def history(ledger_engine: Engine, service_role: str) -> History:
    written = write_history(make_session_factory(ledger_engine))
    with make_session_factory(ledger_engine).begin() as session:
        grant_tenant(session, service_role, "acme", now=NOW)
        grant_tenant(session, "svc_of_someone_else", "globex", now=NOW)
    return written


def tenants_seen(engine: Engine, scope: str | None = None) -> dict[str, set[str]]:
    """The tenants of the rows each table shows, in a transaction scoped to `scope`."""
    with engine.begin() as connection:
        if scope is not None:
            connection.execute(
                text("SELECT set_config('keyledger.tenant', :t, true)"), {"t": scope}
            )
        return {
            table: set(
                connection.execute(text(f"SELECT DISTINCT tenant_id FROM {table}")).scalars()
            )
            for table in TABLES
        }


@postgresql_only
def test_a_tenants_role_cannot_read_another_tenants_rows_even_scoped_to_it(
    ledger_engine: Engine,
    service_role: str,
    history: History,
    connect_as: Callable[[str], Engine],
) -> None:
    acme_role = connect_as(service_role)
    only_acme = {"encryption_keys": {"acme"}, "key_events": {"acme"}, "handled_requests": set()}
    nothing = {table: set[str]() for table in TABLES}

    assert tenants_seen(acme_role) == only_acme
    assert tenants_seen(acme_role, "acme") == only_acme
    # Setting the scope to another tenant itself shows it nothing of that tenant.
    assert tenants_seen(acme_role, "globex") == nothing
    # Nor can it write there: its UPDATE finds no row.
    with acme_role.begin() as connection:
        connection.execute(SET_SCOPE, {"t": "globex"})
        touched = connection.execute(
            text("UPDATE encryption_keys SET last_used_at = now() WHERE tenant_id = 'globex'")
        )
        assert touched.rowcount == 0
    # It reads its own grants only.
    with acme_role.connect() as connection:
        grants = connection.execute(text("SELECT role_name, tenant_id FROM tenant_grants")).all()
    assert [tuple(row) for row in grants] == [(service_role, "acme")]

    # The operator's role owns the tables: no policy applies to it.
    assert tenants_seen(ledger_engine) == {
        "encryption_keys": {"acme", "globex"},
        "key_events": {"acme", "globex"},
        "handled_requests": set(),
    }

    # A revoked grant hides the tenant at once.
    with make_session_factory(ledger_engine).begin() as session:
        assert revoke_tenant(session, service_role, "acme")
    assert tenants_seen(acme_role) == nothing


@postgresql_only
def test_the_client_scopes_its_session_and_refuses_a_tenant_outside_the_grant(
    ledger_url: str,
    service_role: str,
    history: History,
    connect_as: Callable[[str], Engine],
) -> None:
    acme_role = connect_as(service_role)
    with KeyledgerClient(make_session_factory(acme_role), backends=[]) as client:
        with pytest.raises(TenantNotGranted) as refused:
            client.encrypt("globex", "billing", b"x")
        assert str(refused.value).startswith(
            f"database role '{service_role}' is not granted tenant 'globex'"
        )
        assert f"keyledger grant {service_role} globex" in str(refused.value)
        # Its own tenant's key is found (and then wants a backend for its KMS).
        with pytest.raises(KeyNotUsable, match=r"acme/patients v2 lives in LOCAL_SOFTWARE"):
            client.encrypt("acme", "patients", b"x")

    # The scope the client set stays inside its transaction.
    with make_session_factory(acme_role)() as session:
        KeyLedger(session).scope_to_tenant("acme")
        assert session.scalar(text("SELECT current_setting('keyledger.tenant')")) == "acme"
        session.rollback()
        assert session.scalar(text("SELECT current_setting('keyledger.tenant', true)")) in (
            "",
            None,
        )


@postgresql_only
def test_the_client_opens_blobs_only_as_a_tenant_its_role_is_granted(
    ledger_url: str,
    service_role: str,
    history: History,
    connect_as: Callable[[str], Engine],
) -> None:
    globex_key = history.billing_v1.id
    sealed_for_globex = seal(globex_key, "globex", b"wrapped", bytes(32), b"x", {})
    acme_role = connect_as(service_role)
    with KeyledgerClient(make_session_factory(acme_role), backends=[], listen=False) as client:
        # The header says whose it is: refused before the ledger is asked.
        with pytest.raises(TenantMismatch, match="sealed for tenant 'globex'"):
            client.decrypt(sealed_for_globex, tenant="acme")
        # Opened as globex itself, the role's grant refuses it.
        with pytest.raises(TenantNotGranted, match="is not granted tenant 'globex'"):
            client.decrypt(sealed_for_globex, tenant="globex")


@postgresql_only
def test_a_break_glass_open_is_audited_through_the_services_own_role(
    ledger_engine: Engine,
    service_role: str,
    history: History,
    connect_as: Callable[[str], Engine],
) -> None:
    with ledger_engine.begin() as connection:
        connection.execute(text(f"GRANT INSERT ON key_events TO {service_role}"))
        connection.execute(text(f"GRANT USAGE ON SEQUENCE key_events_id_seq TO {service_role}"))
    with make_session_factory(ledger_engine).begin() as session:
        grant_tenant(session, service_role, "globex", now=NOW)
    leaked = history.billing_v1.id  # COMPROMISED
    blob = seal(leaked, "globex", b"wrapped", bytes(32), b"x", {})
    glass = BreakGlass(actor="alice@example.com", reason="INC-42")
    globex_role = connect_as(service_role)
    with KeyledgerClient(make_session_factory(globex_role), backends=[], listen=False) as client:
        with pytest.raises(VersionCompromised):
            client.decrypt(blob, tenant="globex")
        # Audited before the KMS is asked (here there is no backend to ask).
        with pytest.raises(KeyNotUsable, match="pass a backend"):
            client.decrypt(blob, tenant="globex", break_glass=glass)

    with make_session_factory(ledger_engine)() as session:
        opened = [
            e
            for e in KeyLedger(session).events(leaked)
            if e.event_type is KeyEventType.BREAK_GLASS_OPENED
        ]
        assert verify_chains(session, "globex")[0].intact
    assert [(e.actor, e.reason) for e in opened] == [("alice@example.com", "INC-42")]
    assert opened[0].details is not None
    assert opened[0].details["ledgerRole"] == service_role

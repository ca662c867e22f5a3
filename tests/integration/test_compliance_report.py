"""`keyledger report` on a ledger with rotated, compromised, expired and overdue keys,
on both databases; and what it says when the audit trail was tampered with."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from keyledger.cli.main import main
from keyledger.cli.report import read_report
from keyledger.compliance import VERSION_FIELDS, render_csv, render_json, render_table
from keyledger.settings import get_settings
from keyledger.store.engine import make_session_factory
from tests.integration.ledger_history import NOW, History, write_history

postgresql_only = pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)


@pytest.fixture
def history(ledger_engine: Engine) -> History:
    return write_history(make_session_factory(ledger_engine))


def findings_by_version(engine: Engine, tenant: str | None = None) -> dict[str, list[str]]:
    with make_session_factory(engine)() as session:
        report = read_report(session, tenant, NOW)
    return {
        f"{line.facts.tenant}/{line.facts.key_name} v{line.facts.version}": [
            f.value for f in line.findings
        ]
        for line in report.versions
    }


def test_findings_follow_each_keys_own_policy(ledger_engine: Engine, history: History) -> None:
    assert findings_by_version(ledger_engine) == {
        "acme/invoices v1": [],  # 30d rotation, 10 days old
        "acme/patients v2": ["RotationOverdue"],  # 90d rotation, 110 days since activation
        "acme/patients v1": ["RollbackWindowPast"],  # 7d window, still open 103 days on
        "globex/archive v1": ["Expired"],
        "globex/billing v2": [],  # manual rotation: never overdue
        "globex/billing v1": ["Compromised"],
    }
    assert set(findings_by_version(ledger_engine, "globex")) == {
        "globex/archive v1",
        "globex/billing v2",
        "globex/billing v1",
    }


def test_json_names_who_created_and_rotated_each_version(
    ledger_engine: Engine, history: History
) -> None:
    with make_session_factory(ledger_engine)() as session:
        document = json.loads(render_json(read_report(session, None, NOW)))
    assert document["compliant"] is False
    assert document["summary"] == {
        "keys": 4,
        "versions": 6,
        "RotationOverdue": 1,
        "RollbackWindowPast": 1,
        "ExpiryPast": 0,
        "Compromised": 1,
        "Expired": 1,
    }
    assert [(c["tenant"], c["intact"]) for c in document["audit_chains"]] == [
        ("acme", True),
        ("globex", True),
    ]
    by_name = {(v["tenant"], v["key_name"], v["version"]): v for v in document["versions"]}
    patients_v1 = by_name["acme", "patients", 1]
    assert set(patients_v1) == set(VERSION_FIELDS)
    assert (patients_v1["created_by"], patients_v1["rotated_by"]) == ("alice", "keyledger-operator")
    assert patients_v1["last_used_at"] == "2026-07-19T09:00:00Z"
    assert patients_v1["age_days"] == 200
    patients_v2 = by_name["acme", "patients", 2]
    assert patients_v2["rotation_period"] == "90d"
    assert patients_v2["rotation_due_at"] == "2026-08-28T09:00:00Z"
    assert patients_v2["rotation_overdue_days"] == 20
    billing_v2 = by_name["globex", "billing", 2]
    assert (billing_v2["created_by"], billing_v2["rotated_by"]) == ("carol", None)
    billing_v1 = by_name["globex", "billing", 1]
    assert (billing_v1["status"], billing_v1["compromised_by"]) == ("COMPROMISED", "carol")
    assert billing_v2["rotation_period"] is None


def test_table_and_csv(ledger_engine: Engine, history: History) -> None:
    with make_session_factory(ledger_engine)() as session:
        report = read_report(session, "acme", NOW)
    table = render_table(report)
    assert table.splitlines()[0] == "keyledger compliance report, 2026-09-17T09:00:00Z, tenant acme"
    patients_v2 = next(line for line in table.splitlines() if "patients  2" in line)
    assert patients_v2.split() == [
        "acme",
        "patients",
        "2",
        "ACTIVE",
        "110d",
        "3h",
        "ago",
        "keyledger-operator",
        "-",
        "OVERDUE",
        "20d",
        "RotationOverdue",
    ]
    assert "  acme: intact, 7 rows" in table
    assert table.endswith("compliant: no\n")

    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [(r["key_name"], r["version"], r["findings"], r["audit_chain"]) for r in rows] == [
        ("invoices", "1", "", "intact"),
        ("patients", "2", "RotationOverdue", "intact"),
        ("patients", "1", "RollbackWindowPast", "intact"),
    ]


@pytest.mark.postgres
@postgresql_only
def test_a_tampered_audit_trail_makes_the_report_non_compliant(
    ledger_engine: Engine, history: History
) -> None:
    with ledger_engine.begin() as connection:
        connection.execute(text("ALTER TABLE key_events DISABLE TRIGGER key_events_append_only"))
        connection.execute(
            text(
                "UPDATE key_events SET actor = 'mallory' WHERE tenant_id = 'globex' AND id = "
                "(SELECT max(id) FROM key_events WHERE tenant_id = 'globex')"
            )
        )
    with make_session_factory(ledger_engine)() as session:
        report = read_report(session, "globex", NOW)
    assert not report.compliant
    assert "  globex: BROKEN: tenant 'globex': row " in render_table(report)


@pytest.fixture
def cli_ledger(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("KEYLEDGER_DATABASE_URL", ledger_url)
    get_settings.cache_clear()
    yield ledger_url
    get_settings.cache_clear()


def test_keyledger_report_command(
    cli_ledger: str, history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--tenant", "globex", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["tenant"] == "globex"
    assert {v["key_name"] for v in document["versions"]} == {"archive", "billing"}
    assert main(["report", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 6
    assert main(["report"]) == 0
    assert "compliant: no" in capsys.readouterr().out

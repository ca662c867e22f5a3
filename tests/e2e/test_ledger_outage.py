"""The ledger database goes away and comes back: keys wait with a clear reason,
then finish what was asked, once; nothing is created in the KMS without its row."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.providers.local.keystore import read_keystore
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from tests.fixtures_operator import (
    annotate,
    apply,
    bind_namespace,
    encryption_key,
    get,
    new_operator,
    ready_condition,
    statuses,
    wait_condition,
    wait_not_ready,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess
from tests.harness.postgres import (
    PostgresServer,
    create_database,
    pause_postgres,
    resume_postgres,
    start_postgres,
    stop_postgres,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


@dataclass
class OutageStack:
    server: PostgresServer
    operator: OperatorProcess
    namespace: str
    sessions: sessionmaker[Session]
    paused: bool = False

    def pause(self) -> None:
        pause_postgres(self.server)
        self.paused = True

    def resume(self) -> None:
        resume_postgres(self.server)
        self.paused = False


@pytest.fixture
def stack(crds: ControlPlane, local_provider: str, tmp_path: Path) -> Iterator[OutageStack]:
    """An operator with a PostgreSQL of its own, which the test may stop."""
    server = start_postgres(tmp_path / "postgres")
    url = create_database(server, "keyledger_outage")
    upgrade_database(url)
    engine = make_engine(url)
    namespace = f"outage-{uuid.uuid4().hex[:8]}"
    kubectl(crds, "create", "namespace", namespace)
    operator = new_operator(crds, url, tmp_path / "operator", (namespace,))
    operator.start()
    state = OutageStack(server, operator, namespace, make_session_factory(engine))
    try:
        yield state
    finally:
        operator.stop()
        engine.dispose()
        if state.paused:
            state.resume()
        stop_postgres(server)


def test_keys_wait_out_a_ledger_outage_and_finish_once(
    crds: ControlPlane, stack: OutageStack, local_provider: str
) -> None:
    operator, namespace = stack.operator, stack.namespace
    tenant = f"outage-{uuid.uuid4().hex[:6]}"
    bind_namespace(crds, namespace, tenant)

    def key(name: str) -> dict[str, object]:
        return encryption_key(name, namespace, tenant=tenant, provider=local_provider)

    apply(crds, key("steady"))
    wait_condition(crds, "ek", "steady", "Ready", namespace=namespace, operator=operator)

    stack.pause()
    apply(crds, key("newcomer"))
    annotate(crds, namespace, "steady", rotate_requested_at="during-outage")
    for name in ("newcomer", "steady"):
        ek = wait_not_ready(crds, name, "LedgerUnavailable", namespace=namespace, operator=operator)
        ready = ready_condition(ek)
        assert "ledger database is unreachable" in ready["message"]
        assert "SELECT" not in ready["message"] and "INSERT" not in ready["message"]
    assert get(crds, "ek", "steady", namespace)["status"]["version"] == 1
    # The outage shows in the ledger and pass series the LedgerUnavailable alert reads.
    samples = operator.metrics()
    assert sum(v for k, v in samples.items() if k.startswith("keyledger_ledger_errors_total{")) > 0
    assert any(
        k.startswith("keyledger_reconcile_failures_total{") and 'reason="LedgerUnavailable"' in k
        for k, v in samples.items()
        if v > 0
    ), sorted(k for k in samples if "failures" in k)

    stack.resume()
    wait_condition(
        crds, "ek", "newcomer", "Ready", namespace=namespace, operator=operator, timeout=90
    )
    steady = wait_condition(
        crds, "ek", "steady", "Ready", namespace=namespace, operator=operator, timeout=90
    )
    assert steady["status"]["version"] == 2
    assert statuses(stack.sessions, tenant, "steady") == [(2, "ACTIVE"), (1, "ROTATED")]
    assert statuses(stack.sessions, tenant, "newcomer") == [(1, "ACTIVE")]
    # The operator's keystore holds exactly the three versions the ledger knows.
    keystore = read_keystore(operator.keystore_dir / "tests.json")
    assert len(keystore) == 3

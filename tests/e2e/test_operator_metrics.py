"""/metrics after real transitions on Vault transit (OpenBao): create, rotate, and a
KMS that stops answering. The pass, ledger and provider series appear with the
expected labels and counts, and no label carries a key id or KMS reference."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.contract.backends.vault import prepare_server, vault_options
from tests.fixtures_operator import (
    annotate,
    apply,
    encryption_key,
    get,
    new_operator,
    ready_condition,
    tenant_namespace,
    wait_condition,
    wait_for,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.openbao import OpenBaoServer, start_openbao, stop_openbao
from tests.harness.operator import OperatorProcess
from tests.unit.test_monitoring import sample_names, used_names

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

VAULT = "HASHICORP_VAULT"
# The provider is re-checked every 30 s (handlers/providers.py).
PROVIDER_RECHECK_TIMEOUT = 60


@dataclass
class Stack:
    operator: OperatorProcess
    namespace: str
    bao: OpenBaoServer
    tenant: str
    bao_stopped: bool = False


def samples(operator: OperatorProcess, metric: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `metric` (e.g. keyledger_kms_calls_total) with its labels."""
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(operator.metrics_text())
        for sample in family.samples
        if sample.name == metric
    ]


def value(operator: OperatorProcess, metric: str, /, **labels: str) -> float:
    """The sum of the samples of `metric` whose labels include `labels`."""
    return sum(v for found, v in samples(operator, metric) if labels.items() <= found.items())


@pytest.fixture
def stack(crds: ControlPlane, operator_database: str, tmp_path: Path) -> Iterator[Stack]:
    """A fresh operator (its counters start at zero) and an OpenBao of its own."""
    tenant = f"m-{uuid.uuid4().hex[:6]}"
    namespace = tenant_namespace(crds, f"m-{uuid.uuid4().hex[:8]}", tenant)
    bao = start_openbao(tmp_path)
    token = prepare_server(bao)
    apply(
        crds,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vault-token", "namespace": namespace},
            "stringData": {"token": token},
        },
    )
    apply(
        crds,
        {
            "apiVersion": "keyledger.io/v1alpha1",
            "kind": "KeyProvider",
            "metadata": {"name": "vault", "namespace": namespace},
            "spec": {
                "vault": vault_options(bao.address),
                "credentialsRef": {"name": "vault-token"},
            },
        },
    )
    operator = new_operator(crds, operator_database, tmp_path / "operator", (namespace,))
    operator.start()
    state = Stack(operator, namespace, bao, tenant)
    try:
        yield state
    finally:
        operator.stop()
        print(f"\nmetrics operator log: {operator.log_path}")
        if not state.bao_stopped:
            stop_openbao(bao)


def test_pass_ledger_and_provider_series_follow_create_rotate_and_a_kms_failure(
    crds: ControlPlane, stack: Stack
) -> None:
    op, ns = stack.operator, stack.namespace
    provider = {"kind": "KeyProvider", "namespace": ns, "name": "vault"}
    wait_condition(crds, "kp", "vault", "Ready", namespace=ns, operator=op)
    wait_for(
        lambda: value(op, "keyledger_provider_ready", **provider) == 1.0,
        "the provider readiness gauge",
        op,
    )

    key = encryption_key("watched", ns, tenant=stack.tenant, provider="unused")
    key["spec"]["providerRef"] = {"kind": "KeyProvider", "name": "vault"}
    apply(crds, key)
    created = wait_condition(crds, "ek", "watched", "Ready", namespace=ns, operator=op)
    creates = {"provider": VAULT, "operation": "create_key_version", "outcome": "ok"}
    assert value(op, "keyledger_kms_calls_total", **creates) == 1.0
    assert value(op, "keyledger_reconcile_duration_seconds_count", **{"pass": "reconcile"}) >= 1
    assert value(op, "keyledger_ledger_query_seconds_count") > 0
    assert value(op, "keyledger_reconcile_failures_total") == 0.0

    annotate(crds, ns, "watched", rotate_requested_at="metrics-1")
    wait_for(lambda: get(crds, "ek", "watched", ns)["status"].get("version") == 2, "rotation", op)
    assert value(op, "keyledger_kms_calls_total", **creates) == 2.0
    # The per-key task has run at least one pass by now (drift checks every 3 s in tests).
    wait_for(
        lambda: (
            value(op, "keyledger_reconcile_duration_seconds_count", **{"pass": "scheduled"}) >= 1
        ),
        "a scheduled pass",
        op,
    )

    stop_openbao(stack.bao)
    stack.bao_stopped = True
    annotate(crds, ns, "watched", rotate_requested_at="metrics-2")
    failed = wait_condition(
        crds, "ek", "watched", "Ready", namespace=ns, operator=op, status="False", timeout=90
    )
    reason = ready_condition(failed)["reason"]
    assert reason.startswith("Provider"), reason
    wait_for(
        lambda: (
            value(
                op, "keyledger_reconcile_failures_total", **{"pass": "reconcile", "reason": reason}
            )
            >= 1
        ),
        f"a reconcile failure counted as {reason}",
        op,
    )
    assert value(op, "keyledger_kms_calls_total", provider=VAULT, outcome=reason) >= 1
    wait_for(
        lambda: value(op, "keyledger_provider_ready", **provider) == 0.0,
        "the provider readiness gauge to drop",
        op,
        timeout=PROVIDER_RECHECK_TIMEOUT,
    )

    # Bounded labels: no key id, KMS reference or request token in any series.
    text = op.metrics_text()
    status = created["status"]
    for unbounded in (status["keyId"], status["kmsKeyRef"], "metrics-1", "metrics-2"):
        assert unbounded not in text
    failure_labels = {
        frozenset(labels) for labels, _ in samples(op, "keyledger_reconcile_failures_total")
    }
    assert failure_labels == {frozenset({"pass", "reason"})}

    # A deleted provider's readiness series goes with it.
    kubectl(crds, "delete", "kp", "vault", "-n", ns, "--wait=true", "--timeout=60s")
    assert not [
        labels for labels, _ in samples(op, "keyledger_provider_ready") if labels == provider
    ], "the deleted provider's readiness series is still exported"


def test_every_metric_the_rules_and_dashboard_read_is_on_a_running_operators_page(
    crds: ControlPlane, stack: Stack
) -> None:
    wait_condition(crds, "kp", "vault", "Ready", namespace=stack.namespace, operator=stack.operator)
    exported = sample_names(text_string_to_metric_families(stack.operator.metrics_text()))
    for where, names in used_names().items():
        assert not names - exported, f"the {where} read series /metrics lacks: {names - exported}"

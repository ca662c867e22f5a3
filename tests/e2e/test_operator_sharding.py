"""Operators that split namespaces between them (KEYLEDGER_NAMESPACES) leave each
other's keys alone: no finalizer tug-of-war, no second reconcile."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_operator import (
    apply,
    encryption_key,
    get,
    new_operator,
    tenant_namespace,
    wait_condition,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

FINALIZER = "keyledger.io/finalizer"
# Several drift intervals (3 s in tests) and provider rechecks' idle time: long
# enough for a finalizer fight (one round trip per watch event) to show many times.
QUIET_S = 8


@pytest.fixture
def shard(
    crds: ControlPlane, operator_database: str, tmp_path: Path, tenant: str
) -> Iterator[tuple[OperatorProcess, str]]:
    """A second operator, serving one namespace the shared operator does not."""
    namespace = tenant_namespace(crds, f"shard-{uuid.uuid4().hex[:8]}", tenant)
    process = new_operator(crds, operator_database, tmp_path, (namespace,))
    process.start()
    try:
        yield process, namespace
    finally:
        process.stop()


def _settled(cp: ControlPlane, namespace: str, name: str) -> Callable[[], dict[str, Any]]:
    return lambda: get(cp, "ek", name, namespace)["metadata"]


def test_operators_splitting_namespaces_leave_each_others_keys_alone(
    crds: ControlPlane,
    operator: OperatorProcess,
    local_provider: str,
    namespace: str,
    tenant: str,
    shard: tuple[OperatorProcess, str],
) -> None:
    shard_operator, shard_namespace = shard
    apply(crds, encryption_key("mine", namespace, tenant=tenant, provider=local_provider))
    apply(crds, encryption_key("theirs", shard_namespace, tenant=tenant, provider=local_provider))
    wait_condition(crds, "ek", "mine", "Ready", namespace=namespace, operator=operator)
    wait_condition(
        crds, "ek", "theirs", "Ready", namespace=shard_namespace, operator=shard_operator
    )

    keys = {
        "mine": _settled(crds, namespace, "mine"),
        "theirs": _settled(crds, shard_namespace, "theirs"),
    }
    before = {name: read() for name, read in keys.items()}
    time.sleep(QUIET_S)
    after = {name: read() for name, read in keys.items()}

    for name in keys:
        assert FINALIZER in after[name].get("finalizers", []), f"{name} lost its finalizer"
        assert after[name]["resourceVersion"] == before[name]["resourceVersion"], (
            f"idle key {name} was written to while both operators ran"
        )
    # Each key was reconciled by its own operator only.
    assert "[" + f"{shard_namespace}/theirs]" in shard_operator.log_text()
    assert f"{namespace}/mine" not in shard_operator.log_text()
    # The shared operator serves the admission webhooks for every namespace; it
    # handles nothing else of the other operator's key.
    assert [
        line
        for line in operator.log_text().splitlines()
        if f"{shard_namespace}/theirs" in line and "Webhook '" not in line
    ] == []

"""Per-key gauges a Prometheus alert can watch: readiness, version, expiry, next rotation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.fixtures_operator import annotate, get, wait_condition, wait_for
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


def _gauges(operator: OperatorProcess, namespace: str, name: str, tenant: str) -> dict[str, float]:
    labels = f'{{name="{name}",namespace="{namespace}",tenant="{tenant}"}}'  # sorted, as exposed
    return {
        sample.removeprefix("keyledger_key_").removesuffix(labels): value
        for sample, value in operator.metrics().items()
        if sample.startswith("keyledger_key_") and sample.endswith(labels)
    }


def _epoch(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp()


def test_key_gauges_follow_status_and_go_with_the_key(
    crds: ControlPlane,
    operator: OperatorProcess,
    make_key: Callable[..., dict[str, Any]],
    namespace: str,
    tenant: str,
) -> None:
    make_key("watched", rotation={"period": "30d"}, expiry={"after": "90d"})
    ek = wait_condition(crds, "ek", "watched", "Ready", namespace=namespace, operator=operator)
    status = ek["status"]
    assert _gauges(operator, namespace, "watched", tenant) == {
        "ready": 1.0,
        "drifted": 0.0,
        "paused": 0.0,
        "version": 1.0,
        "expiration_timestamp_seconds": _epoch(status["expiresAt"]),
        "next_rotation_timestamp_seconds": _epoch(status["nextRotationAt"]),
    }

    annotate(crds, namespace, "watched", rotate_requested_at="m-1")
    wait_for(
        lambda: _gauges(operator, namespace, "watched", tenant).get("version") == 2.0,
        "the version gauge to follow the rotation",
        operator,
    )
    rotated = get(crds, "ek", "watched", namespace)["status"]
    assert _gauges(operator, namespace, "watched", tenant)["expiration_timestamp_seconds"] == (
        _epoch(rotated["expiresAt"])
    )

    kubectl(crds, "delete", "ek", "watched", "-n", namespace, "--wait=true")
    wait_for(
        lambda: not _gauges(operator, namespace, "watched", tenant),
        "the deleted key's gauges to go",
        operator,
    )

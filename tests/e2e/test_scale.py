"""Timers scale: with 500 idle keys the operator makes no KMS calls but drift checks,
and those are spread over the interval instead of arriving together."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures_operator import bind_namespace, encryption_key, new_operator
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess

# Creating 500 keys on two cores takes a minute or two; the window itself is one minute.
pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(900)]

KEYS = 500
DRIFT_INTERVAL_S = 60
WINDOW_S = 60


@pytest.fixture
def scale_operator(
    crds: ControlPlane, operator_database: str, local_provider: str, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, str]]:
    namespace = f"scale-{uuid.uuid4().hex[:8]}"
    kubectl(crds, "create", "namespace", namespace)
    process = new_operator(
        crds,
        operator_database,
        tmp_path,
        (namespace,),
        KEYLEDGER_DRIFT_INTERVAL=f"{DRIFT_INTERVAL_S}s",
    )
    process.verbose = False  # debug logging of 500 keys would be the bottleneck measured
    process.start()
    try:
        yield process, namespace
    finally:
        process.stop()


def _kms_calls(operator: OperatorProcess) -> dict[str, float]:
    """keyledger_kms_calls_total by operation."""
    calls: dict[str, float] = {}
    for sample, value in operator.metrics().items():
        if sample.startswith("keyledger_kms_calls_total{"):
            operation = sample.split('operation="', 1)[1].split('"', 1)[0]
            calls[operation] = calls.get(operation, 0.0) + value
    return calls


def _ready_count(cp: ControlPlane, namespace: str) -> int:
    listing = json.loads(kubectl(cp, "get", "ek", "-n", namespace, "-o", "json").stdout)
    return sum(
        any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in item.get("status", {}).get("conditions", [])
        )
        for item in listing["items"]
    )


def test_idle_keys_cost_only_spread_out_drift_checks(
    crds: ControlPlane,
    scale_operator: tuple[OperatorProcess, str],
    local_provider: str,
) -> None:
    operator, namespace = scale_operator
    tenant = f"scale-{uuid.uuid4().hex[:6]}"
    bind_namespace(crds, namespace, tenant)
    manifests = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            encryption_key(
                f"key-{n:03d}",
                namespace,
                tenant=tenant,
                provider=local_provider,
                rotation={"period": "90d"},
                expiry={"after": "365d"},
            )
            for n in range(KEYS)
        ],
    }
    started = time.monotonic()
    items = manifests["items"]
    for chunk in range(0, KEYS, 100):
        batch = {"apiVersion": "v1", "kind": "List", "items": items[chunk : chunk + 100]}
        kubectl(crds, "create", "-f", "-", input=yaml.safe_dump(batch))
    deadline = time.monotonic() + 600
    while _ready_count(crds, namespace) < KEYS:
        operator.assert_running()
        assert time.monotonic() < deadline, f"not all {KEYS} keys became Ready in time"
        time.sleep(2)
    print(f"\n{KEYS} keys Ready in {time.monotonic() - started:.1f} s")

    before = _kms_calls(operator)
    per_second: list[float] = []
    last = before.get("describe", 0.0)
    for _ in range(WINDOW_S):
        time.sleep(1)
        now = _kms_calls(operator).get("describe", 0.0)
        per_second.append(now - last)
        last = now
    after = _kms_calls(operator)

    # Provider health checks (check, then destroy_due) run every 30 s, once per
    # provider, not per key; other tests may have left ClusterKeyProviders too.
    per_provider = ("check", "destroy_due")
    others = {
        op: after.get(op, 0) - before.get(op, 0)
        for op in after
        if op != "describe" and op not in per_provider
    }
    assert all(delta == 0 for delta in others.values()), f"non-drift KMS calls: {others}"
    providers = len(json.loads(kubectl(crds, "get", "ckp", "-o", "json").stdout)["items"])
    for operation in per_provider:
        calls = after.get(operation, 0) - before.get(operation, 0)
        assert calls <= providers * (WINDOW_S / 30 + 1), f"{operation}: {calls}"

    checks = sum(per_second)
    expected = KEYS * WINDOW_S / DRIFT_INTERVAL_S
    mean = statistics.mean(per_second)
    print(
        f"drift checks: {checks:.0f} in {WINDOW_S} s (expected ~{expected:.0f}); "
        f"per second mean {mean:.1f}, max {max(per_second):.0f}, "
        f"stdev {statistics.pstdev(per_second):.1f}"
    )
    assert 0.6 * expected <= checks <= 1.4 * expected
    # Spread out: in 5-second buckets (which absorb a busy machine's stalls) none
    # carries more than twice the average; synchronized timers would put all 500 checks
    # of an interval into one bucket. And almost every second has some.
    buckets = [sum(per_second[i : i + 5]) for i in range(0, WINDOW_S, 5)]
    print(f"per 5 s: {[int(b) for b in buckets]}")
    assert max(buckets) <= 2 * statistics.mean(buckets)
    assert sum(1 for n in per_second if n > 0) >= 0.9 * WINDOW_S

"""Restarting the operator leaves healthy keys alone: no Warning event and no
Ready=False on a key whose provider the restarted operator has not checked yet,
so a rollout does not light up a dashboard of Warning events.

The provider's status is removed while the operator is down (as a restore or a
re-created provider leaves it), so the keys' resume passes certainly run before
the provider's first check."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures_operator import (
    apply,
    encryption_key,
    events_for,
    get,
    new_operator,
    provider_manifest,
    ready_condition,
    tenant_namespace,
    wait_condition,
    wait_for,
)
from tests.harness.controlplane import ControlPlane, kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

# The restarted operator's resume passes, its first provider checks (5 s idle) and
# a few drift checks (3 s in tests) all happen within this.
AFTER_RESTART_S = 12


def test_a_restart_posts_no_warning_on_healthy_keys(
    crds: ControlPlane, operator_database: str, tmp_path: Path
) -> None:
    tenant = f"q-{uuid.uuid4().hex[:6]}"
    namespace = tenant_namespace(crds, f"q-{uuid.uuid4().hex[:8]}", tenant)
    operator = new_operator(crds, operator_database, tmp_path / "operator", (namespace,))
    operator.start()
    try:
        apply(crds, provider_manifest("local", {"local": {"keystore": "quiet"}}, namespace))
        wait_condition(crds, "kp", "local", "Ready", namespace=namespace, operator=operator)
        names = [f"key-{i}" for i in range(4)]
        for name in names:
            key = encryption_key(name, namespace, tenant=tenant, provider="unused")
            key["spec"]["providerRef"] = {"kind": "KeyProvider", "name": "local"}
            apply(crds, key)
        for name in names:
            wait_condition(crds, "ek", name, "Ready", namespace=namespace, operator=operator)
        before = {name: get(crds, "ek", name, namespace) for name in names}

        operator.stop()
        kubectl(
            crds,
            "patch",
            "kp",
            "local",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": null}',
        )
        assert "status" not in get(crds, "kp", "local", namespace)
        restarted_log = operator.log_path.stat().st_size
        operator.start()
        wait_for(
            lambda: all(
                f"[{namespace}/{name}] reconciling" in operator.log_text()[restarted_log:]
                for name in names
            ),
            "the restarted operator's resume passes",
            operator,
        )
        time.sleep(AFTER_RESTART_S)
        operator.assert_running()
    finally:
        operator.stop()

    after_restart = operator.log_text()[restarted_log:]
    assert f"[{namespace}/{names[0]}]" in after_restart, "the restarted operator never saw the keys"
    for name in names:
        # Warning, and Error (kopf's type for a handler's failure logged at ERROR).
        noisy = [
            (e["type"], e["reason"], e["message"])
            for e in events_for(crds, namespace, name)
            if e["type"] != "Normal"
        ]
        assert noisy == [], f"{name}: {noisy}"
        ready = ready_condition(get(crds, "ek", name, namespace))
        assert ready["status"] == "True", f"{name}: {ready}"
        # Ready never flipped: its transition time is still the one from before.
        assert ready["lastTransitionTime"] == ready_condition(before[name])["lastTransitionTime"]

"""The test control plane behaves like a real cluster where our tests depend on it.

Above all RBAC must be enforced: the operator's least-privilege manifests are only
tested if a missing permission really fails.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import (
    ControlPlane,
    kubectl,
    service_account_kubeconfig,
    start_control_plane,
    stop_control_plane,
)

pytestmark = pytest.mark.cluster

# RBAC reads roles and bindings through an informer cache, so a new binding takes a
# moment to apply.
_RBAC_PROPAGATION_S = 10.0


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace, so the test holds on an existing shared cluster too."""
    name = f"kl-test-{uuid.uuid4().hex[:8]}"
    kubectl(control_plane, "create", "namespace", name)
    yield name
    # Without a controller-manager (the testbin runs none) the namespace stays
    # Terminating; that is harmless in a throwaway control plane.
    kubectl(control_plane, "delete", "namespace", name, "--wait=false")


def test_admin_can_list_namespaces(control_plane: ControlPlane) -> None:
    names = kubectl(control_plane, "get", "namespaces", "--output=name").stdout.split()

    assert "namespace/default" in names
    assert "namespace/kube-system" in names


def test_rbac_denies_a_service_account_until_a_role_allows_it(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    in_ns = f"--namespace={namespace}"
    kubectl(control_plane, "create", "serviceaccount", "reader", in_ns)
    as_reader = service_account_kubeconfig(
        control_plane, namespace, "reader", tmp_path / "reader.kubeconfig"
    )
    # The token authenticates, so a refusal below is authorization, not a bad token.
    username = "--output=jsonpath={.status.userInfo.username}"
    whoami = kubectl(control_plane, "auth", "whoami", username, kubeconfig=as_reader)
    assert whoami.stdout == f"system:serviceaccount:{namespace}:reader"

    denied = kubectl(control_plane, "get", "pods", in_ns, kubeconfig=as_reader, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert f'cannot list resource "pods" in API group "" in the namespace "{namespace}"' in (
        denied.stderr
    )

    role = ("pod-reader", "--verb=list", "--resource=pods")
    kubectl(control_plane, "create", "role", *role, in_ns)
    binding = ("reader-reads-pods", "--role=pod-reader", f"--serviceaccount={namespace}:reader")
    kubectl(control_plane, "create", "rolebinding", *binding, in_ns)

    allowed = _retry_until_ok(
        lambda: kubectl(control_plane, "get", "pods", in_ns, kubeconfig=as_reader, check=False)
    )
    assert allowed.returncode == 0, allowed.stderr
    # The binding grants exactly that: other resources stay forbidden.
    secrets = kubectl(control_plane, "get", "secrets", in_ns, kubeconfig=as_reader, check=False)
    assert secrets.returncode != 0
    assert "Forbidden" in secrets.stderr


def _retry_until_ok(
    call: Callable[[], subprocess.CompletedProcess[str]],
) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + _RBAC_PROPAGATION_S
    while True:
        result = call()
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_a_server_slow_to_start_is_waited_for_not_reported_gone(tmp_path: Path) -> None:
    """Between its fork and its exec a started server is a copy of the starting shell;
    a liveness check made then must not report it gone. etcd's log is a pipe here, so
    the child blocks opening it, before its exec, until a reader comes."""
    state_dir = tmp_path / "control-plane"
    state_dir.mkdir()
    log = state_dir / "etcd.log"
    os.mkfifo(log)
    drained: list[bytes] = []

    def drain() -> None:
        time.sleep(1.0)  # the starting script checks on etcd meanwhile
        with log.open("rb") as pipe:
            drained.extend(pipe)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    cp = start_control_plane(state_dir)
    try:
        assert kubectl(cp, "get", "namespace", "default", "-o", "name").stdout.strip() == (
            "namespace/default"
        )
    finally:
        stop_control_plane(cp)
    reader.join(30)

"""The test control plane behaves like a real cluster where our tests depend on it.

Above all RBAC must be enforced: the operator's least-privilege manifests are only
tested if a missing permission really fails.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import ControlPlane, kubectl, service_account_kubeconfig

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

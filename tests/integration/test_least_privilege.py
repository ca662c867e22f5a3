"""What the RBAC in manifests/ grants, asked of the real API server with
`kubectl auth can-i --as=...`: the operator, a key editor and a key viewer can do
their jobs and nothing the job does not need."""

from __future__ import annotations

import uuid

import pytest

from tests.fixtures_operator import apply
from tests.harness.controlplane import ControlPlane, kubectl

pytestmark = [pytest.mark.cluster]

OPERATOR = "system:serviceaccount:keyledger-system:keyledger-operator"


def can(cp: ControlPlane, who: str, verb: str, resource: str, namespace: str | None) -> bool:
    """`resource` as kubectl spells it (`kind.group/name`), or `kind.group:subresource`."""
    where = ["-n", namespace] if namespace else []
    resource, _, subresource = resource.partition(":")
    if subresource:
        where.append(f"--subresource={subresource}")
    result = kubectl(cp, "auth", "can-i", f"--as={who}", verb, resource, *where, check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def bind(cp: ControlPlane, namespace: str, role: str, user: str) -> None:
    apply(
        cp,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{role}-{user}", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


@pytest.fixture
def namespaces(crds: ControlPlane) -> tuple[str, str]:
    mine, theirs = (f"rbac-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for name in (mine, theirs):
        kubectl(crds, "create", "namespace", name)
    bind(crds, mine, "keyledger-key-editor", "editor")
    bind(crds, mine, "keyledger-key-viewer", "viewer")
    return mine, theirs


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("watch", "encryptionkeys.keyledger.io", True),
        ("patch", "encryptionkeys.keyledger.io:status", True),
        ("get", "secrets", True),  # a provider's credentialsRef, by name
        ("list", "secrets", False),
        ("watch", "secrets", False),
        ("create", "events", True),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("delete", "encryptionkeys.keyledger.io", False),
        ("create", "encryptionkeys.keyledger.io", False),
        ("create", "pods", False),
        ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io", True),
        ("patch", "validatingwebhookconfigurations/keyledger.io", True),
        ("patch", "validatingwebhookconfigurations/someone-elses", False),
        ("delete", "mutatingwebhookconfigurations/keyledger.io", False),
    ],
)
def test_the_operator_may_do_its_job_and_no_more(
    crds: ControlPlane, verb: str, resource: str, allowed: bool
) -> None:
    if resource.startswith(("validatingwebhook", "mutatingwebhook")) and "/" in resource:
        kind, name = resource.split("/")
        resource = f"{kind}.admissionregistration.k8s.io/{name}"
    assert can(crds, OPERATOR, verb, resource, "default") is allowed


def test_a_key_editor_manages_keys_in_their_namespace_only(
    crds: ControlPlane, namespaces: tuple[str, str]
) -> None:
    mine, theirs = namespaces
    for verb in ("create", "patch", "delete"):
        assert can(crds, "editor", verb, "encryptionkeys.keyledger.io", mine)
        assert not can(crds, "editor", verb, "encryptionkeys.keyledger.io", theirs)
    # Status is the operator's to write, and providers' status too.
    assert not can(crds, "editor", "patch", "encryptionkeys.keyledger.io:status", mine)
    assert not can(crds, "editor", "update", "encryptionkeys.keyledger.io:status", mine)
    assert not can(crds, "editor", "patch", "keyproviders.keyledger.io:status", mine)
    assert not can(crds, "editor", "create", "clusterkeyproviders.keyledger.io", None)
    assert not can(crds, "editor", "get", "secrets", mine)


def test_a_key_viewer_reads_and_changes_nothing(
    crds: ControlPlane, namespaces: tuple[str, str]
) -> None:
    mine, theirs = namespaces
    assert can(crds, "viewer", "list", "encryptionkeys.keyledger.io", mine)
    assert not can(crds, "viewer", "list", "encryptionkeys.keyledger.io", theirs)
    for verb in ("create", "patch", "delete"):
        assert not can(crds, "viewer", verb, "encryptionkeys.keyledger.io", mine)
    assert not can(crds, "viewer", "patch", "encryptionkeys.keyledger.io:status", mine)

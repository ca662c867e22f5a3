"""The admission webhooks, called by the real API server over TLS.

Every rule the schema and CEL cannot express is refused at admission with its
reason and a message naming the field; the requester record cannot be forged;
the operator applies the same rules as its backstop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from keyledger.api import REQUESTERS, TENANT_LABEL
from tests.fixtures_operator import (
    apply,
    encryption_key,
    get,
    provider_manifest,
    tenant_namespace,
    wait_condition,
    wait_not_ready,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


def refused(cp: ControlPlane, manifest: dict[str, Any], *as_user: str) -> str:
    """Apply `manifest`; it must be refused. Returns the API server's message."""
    result = kubectl(cp, *as_user, "apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0, f"admitted: {result.stdout}"
    assert "denied the request" in result.stderr, result.stderr
    return result.stderr


@pytest.fixture
def key(namespace: str, tenant: str, local_provider: str) -> Callable[..., dict[str, Any]]:
    def make(name: str = "phi", **spec: Any) -> dict[str, Any]:
        return encryption_key(name, namespace, tenant=tenant, provider=local_provider, **spec)

    return make


@pytest.mark.parametrize(
    ("spec", "reason", "field"),
    [
        (
            {"rotation": {"period": "1d"}, "rollback": {"window": "2d"}},
            "RollbackWindowTooLong",
            "spec.rollback.window (2d) must be shorter than spec.rotation.period (1d)",
        ),
        (
            {"rotation": {"period": "30d"}, "expiry": {"after": "10d"}},
            "ExpiryBeforeRotation",
            "spec.expiry.after (10d) must be longer than spec.rotation.period (30d)",
        ),
        (
            {"adopt": {"kmsKeyId": "arn:aws:kms:eu-west-1:111122223333:key/abc"}},
            "AdoptionRefused",
            "spec.adopt.kmsKeyId: 'arn:aws:kms:eu-west-1:111122223333:key/abc' is not a local "
            "key reference; it looks like local:",
        ),
    ],
)
def test_contradictory_specs_are_refused_naming_the_field(
    crds: ControlPlane,
    key: Callable[..., dict[str, Any]],
    spec: dict[str, Any],
    reason: str,
    field: str,
) -> None:
    message = refused(crds, key(**spec))
    assert f"{reason}: {field}" in message


def test_a_provider_that_does_not_exist_yet_is_admitted_with_a_warning(
    crds: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    key: Callable[..., dict[str, Any]],
) -> None:
    """GitOps applies a provider and its keys in no set order: the key is admitted,
    the writer warned, and the key waits for its provider."""
    manifest = key("early", providerRef={"kind": "ClusterKeyProvider", "name": "not-yet"})
    result = kubectl(crds, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    assert (
        "Warning: spec.providerRef: ClusterKeyProvider 'not-yet' does not exist yet; "
        "the key waits for it" in result.stderr
    )
    wait_not_ready(crds, "early", "ProviderNotFound", namespace=namespace, operator=operator)


def test_a_key_must_name_its_namespaces_tenant(
    crds: ControlPlane, namespace: str, tenant: str, local_provider: str
) -> None:
    other = f"other-{uuid.uuid4().hex[:6]}"
    manifest = encryption_key("phi", namespace, tenant=other, provider=local_provider)
    message = refused(crds, manifest)
    assert (
        f"TenantMismatch: spec.tenant: namespace {namespace} is bound to tenant '{tenant}'"
        in message
    )
    assert f"set spec.tenant: {tenant}" in message

    unbound = f"t-unbound-{uuid.uuid4().hex[:6]}"
    kubectl(crds, "create", "namespace", unbound)
    message = refused(crds, encryption_key("phi", unbound, tenant=tenant, provider=local_provider))
    assert f"NamespaceNotBoundToTenant: spec.tenant: namespace {unbound} is not bound" in message
    assert f"kubectl label namespace {unbound} {TENANT_LABEL}={tenant}" in message


def test_a_provider_not_open_to_the_tenant_is_refused(
    crds: ControlPlane, namespace: str, tenant: str
) -> None:
    provider = f"closed-{uuid.uuid4().hex[:6]}"
    manifest = provider_manifest(provider, {"local": {"keystore": "closed"}})
    manifest["spec"]["allowedTenants"] = ["somebody-else"]
    apply(crds, manifest)
    message = refused(crds, encryption_key("phi", namespace, tenant=tenant, provider=provider))
    assert f"ProviderNotAllowed: spec.providerRef: ClusterKeyProvider '{provider}'" in message
    assert f"does not serve tenant '{tenant}'" in message


def test_a_deletion_window_the_backend_cannot_keep_is_refused(
    crds: ControlPlane, namespace: str, tenant: str
) -> None:
    """GCP destroys a version after its CryptoKey's destroy_scheduled_duration: a
    longer deletion window cannot be kept. (The provider need not be Ready.)"""
    provider = f"gcp-{uuid.uuid4().hex[:6]}"
    apply(
        crds,
        provider_manifest(
            provider,
            {"gcpKms": {"project": "p", "location": "global", "destroyScheduledDays": 10}},
        ),
    )
    manifest = encryption_key(
        "phi",
        namespace,
        tenant=tenant,
        provider=provider,
        deletionPolicy="ScheduleDeletion",
        deletionWindowDays=20,
    )
    retained = encryption_key("kept", namespace, tenant=tenant, provider=provider)
    kubectl(crds, "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(retained))
    message = refused(crds, manifest)
    assert (
        f"DeletionWindowOutOfRange: spec.deletionWindowDays (20) is outside what the gcpKms "
        f"provider {provider} can keep (7 to 10 days)" in message
    )


def test_requests_that_cannot_be_honoured_are_refused_up_front(
    crds: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    key: Callable[..., dict[str, Any]],
) -> None:
    apply(crds, key("fresh"))
    wait_condition(crds, "ek", "fresh", "Ready", namespace=namespace, operator=operator)
    result = kubectl(
        crds,
        "annotate",
        "-n",
        namespace,
        "ek/fresh",
        "keyledger.io/rollback-requested-at=now",
        check=False,
    )
    assert result.returncode != 0
    assert "NoPreviousVersion: keyledger.io/rollback-requested-at: nothing to roll back to" in (
        result.stderr
    )
    result = kubectl(
        crds,
        "annotate",
        "-n",
        namespace,
        "ek/fresh",
        "keyledger.io/compromised-requested-at=now",
        check=False,
    )
    assert result.returncode != 0
    assert "CompromiseReasonMissing: keyledger.io/compromise-reason: say why" in result.stderr
    assert "keyledger.io/compromised-requested-at" not in json.dumps(
        get(crds, "ek", "fresh", namespace)["metadata"].get("annotations", {})
    )


def test_a_forged_requester_record_is_replaced(
    crds: ControlPlane, namespace: str, key: Callable[..., dict[str, Any]]
) -> None:
    forged = json.dumps({"created": {"subject": "create", "username": "mallory"}})
    manifest = key("forged")
    manifest["metadata"]["annotations"] = {REQUESTERS: forged}
    apply(crds, manifest, as_user=("--as=alice",)) if False else None
    kubectl(crds, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    stored = get(crds, "ek", "forged", namespace)["metadata"]["annotations"][REQUESTERS]
    record = json.loads(stored)
    assert "mallory" not in stored
    assert record["created"]["username"] == record["spec"]["username"] != "mallory"

    # An update that writes the annotation again is rewritten from the stored record.
    kubectl(
        crds,
        "annotate",
        "--overwrite",
        "-n",
        namespace,
        "ek/forged",
        f"{REQUESTERS}={forged}",
    )
    assert get(crds, "ek", "forged", namespace)["metadata"]["annotations"][REQUESTERS] == stored


def test_the_operator_applies_the_rules_itself_as_a_backstop(
    crds: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    tenant: str,
    key: Callable[..., dict[str, Any]],
) -> None:
    """A namespace relabelled to another tenant after its key was admitted: the
    operator refuses to act on the key with the webhook's reason."""
    apply(crds, key("moved"))
    wait_condition(crds, "ek", "moved", "Ready", namespace=namespace, operator=operator)
    kubectl(crds, "label", "--overwrite", "namespace", namespace, f"{TENANT_LABEL}=someone-else")
    kubectl(crds, "annotate", "-n", namespace, "ek/moved", "keyledger.io/rotate-requested-at=later")
    ek = wait_not_ready(crds, "moved", "TenantMismatch", namespace=namespace, operator=operator)
    assert "bound to tenant 'someone-else'" in ek["status"]["conditions"][0]["message"]
    tenant_namespace(crds, namespace, tenant)  # put it back for the fixtures' cleanup

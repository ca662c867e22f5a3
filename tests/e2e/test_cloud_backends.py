"""The operator against GCP Cloud KMS and Azure Key Vault, through their real SDKs, on
keyledger's own wire-level test servers (tests/harness/gcp_kms, tests/harness/azure_kv).

Per backend: the lifecycle a user drives (Ready, rotate, roll back, compromise,
delete by policy) with a service's client encrypting across the rotation; drift
when a version is disabled behind keyledger's back; and adoption of a key made
by hand, rolled back to after a rotation.

Both providers are configured as in production: GCP over TLS with a
service-account key file, Azure with a service principal's client secret. One
operator for the module, serving namespaces `cl-*`, started through the launcher
that lets it trust the Key Vault test server (tests/harness/emulator_operator.py);
it trusts the Cloud KMS server's certificate through gRPC's own
GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, inherited from the test process.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.client import KeyledgerClient
from keyledger.domain import KeyEventType
from keyledger.providers.base import KeyBackend, KmsKeyState
from tests.contract.backends.azure import azure_backend
from tests.contract.backends.gcp import SERVICE_ACCOUNT_KEY, gcp_backend, gcp_options
from tests.fixtures_operator import (
    annotate,
    apply,
    audit,
    condition,
    encryption_key,
    get,
    new_operator,
    provider_manifest,
    rows,
    statuses,
    tenant_namespace,
    wait_condition,
    wait_for,
    wait_for_event,
)
from tests.harness.azure_kv import AzureKeyVaultServer, azure_key_vault
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.emulator_operator import TRUST_ENV
from tests.harness.gcp_kms import GcpKmsServer, gcp_kms
from tests.harness.gcp_kms.auth import ServiceAccount
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

BACKENDS = ["gcpKms", "azureKeyVault"]
PHI = b"MRN 0042: allergic to penicillin"
CONTEXT = {"table": "allergies", "row": "42"}


@dataclass(frozen=True)
class CloudKms:
    spec_field: str
    options: Mapping[str, Any]
    credentials: Mapping[str, str] = field(repr=False)  # the credentialsRef Secret's data
    wrong_credentials: Mapping[str, str] = field(repr=False)  # ...that the server refuses
    # Credential values that must never show in a log, resource or event.
    secrets: tuple[str, ...] = field(repr=False)
    # The test's own backend on the same server: what a service's client uses.
    view: KeyBackend = field(repr=False)
    # Straight through the SDK, as someone outside keyledger would.
    disable_behind_the_back: Callable[[str], None] = field(repr=False)
    make_key_by_hand: Callable[[], str] = field(repr=False)


@dataclass(frozen=True)
class CloudStack:
    operator: OperatorProcess
    kms: dict[str, CloudKms]


def _gcp(server: GcpKmsServer, view: KeyBackend) -> CloudKms:
    sdk = server.client()

    def disable(ref: str) -> None:
        sdk.update_crypto_key_version(
            request={
                "crypto_key_version": {"name": ref, "state": "DISABLED"},
                "update_mask": {"paths": ["state"]},
            }
        )

    def make_key_by_hand() -> str:
        ring = sdk.create_key_ring(
            request={
                "parent": server.location_name,
                "key_ring_id": f"legacy-{uuid.uuid4().hex[:8]}",
                "key_ring": {},
            }
        )
        key = sdk.create_crypto_key(
            request={
                "parent": ring.name,
                "crypto_key_id": "records",
                "crypto_key": {"purpose": "ENCRYPT_DECRYPT"},
            }
        )
        name: str = key.primary.name
        return name

    stranger = ServiceAccount.generate(server.project, "stranger")
    return CloudKms(
        "gcpKms",
        # GCP's default destroy delay, so that keys may keep the default deletion window.
        {**gcp_options(server), "destroyScheduledDays": 30},
        {SERVICE_ACCOUNT_KEY: server.service_account_json()},
        {SERVICE_ACCOUNT_KEY: stranger.key_file(server.project)},
        # A line of each private key's PEM body, and the key ids.
        tuple(
            value
            for account in (server.service_account, stranger)
            for value in (account.private_key_pem.splitlines()[1], account.key_id)
        ),
        view,
        disable,
        make_key_by_hand,
    )


def _azure(server: AzureKeyVaultServer, view: KeyBackend) -> CloudKms:
    sdk = server.key_client()

    def disable(ref: str) -> None:
        name, version = ref.rsplit("/", 2)[1:]
        sdk.update_key_properties(name, version, enabled=False)

    def make_key_by_hand() -> str:
        key = sdk.create_rsa_key(
            f"legacy-{uuid.uuid4().hex[:8]}", size=2048, key_operations=["wrapKey", "unwrapKey"]
        )
        assert key.id is not None
        return key.id

    wrong_secret = secrets.token_urlsafe(30)
    return CloudKms(
        "azureKeyVault",
        server.options(),
        server.credentials(),
        {**server.credentials(), "clientSecret": wrong_secret},
        (server.client_secret, wrong_secret),
        view,
        disable,
        make_key_by_hand,
    )


@pytest.fixture(scope="module")
def cloud(
    crds: ControlPlane, operator_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudStack]:
    workdir = tmp_path_factory.mktemp("cloud-backends")
    with ExitStack() as cleanup:
        gcp = cleanup.enter_context(gcp_kms(workdir / "gcp-kms.log"))
        azure = cleanup.enter_context(azure_key_vault(workdir))
        gcp_view, azure_view = gcp_backend(gcp, workdir), azure_backend(azure, workdir)
        cleanup.callback(gcp_view.close)
        cleanup.callback(azure_view.close)
        operator = new_operator(
            crds,
            operator_database,
            workdir / "operator",
            ("cl-*",),
            **{TRUST_ENV: str(azure.ca_file)},
        )
        operator.module = "tests.harness.emulator_operator"
        operator.start()
        cleanup.callback(print, f"\ncloud backends operator log: {operator.log_path}")
        cleanup.callback(operator.stop)
        yield CloudStack(
            operator, {"gcpKms": _gcp(gcp, gcp_view), "azureKeyVault": _azure(azure, azure_view)}
        )


@pytest.fixture
def cl_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cl_namespace(cloud: CloudStack, crds: ControlPlane, cl_tenant: str) -> Iterator[str]:
    """A namespace bound to the test's tenant: every key of the test is that tenant's."""
    name = tenant_namespace(crds, f"cl-{uuid.uuid4().hex[:10]}", cl_tenant)
    yield name
    # While the operator runs, so that finalizers complete.
    for kind in ("ek", "kp"):
        kubectl(crds, "delete", kind, "--all", "-n", name, "--timeout=60s", check=False)


def _provider(
    cp: ControlPlane,
    kms: CloudKms,
    namespace: str,
    operator: OperatorProcess,
    *,
    credentials: Mapping[str, str] | None = None,
    wait: bool = True,
) -> str:
    """A KeyProvider for `kms` in `namespace` with its credentials Secret (or `credentials`),
    ready unless `wait` is False; returns its name."""
    name = kms.spec_field.lower()
    apply(cp, _secret(f"{name}-credentials", namespace, credentials or kms.credentials))
    spec = {kms.spec_field: dict(kms.options), "credentialsRef": {"name": f"{name}-credentials"}}
    apply(cp, provider_manifest(name, spec, namespace))
    if wait:
        wait_condition(cp, "kp", name, "Ready", namespace=namespace, operator=operator)
    return name


def _secret(name: str, namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": dict(data),
    }


def _key(name: str, namespace: str, tenant: str, provider: str, **spec: Any) -> dict[str, Any]:
    return encryption_key(
        name,
        namespace,
        tenant=tenant,
        provider=provider,
        providerRef={"kind": "KeyProvider", "name": provider},
        **spec,
    )


def _wait_version(
    cp: ControlPlane, namespace: str, name: str, version: int, operator: OperatorProcess
) -> dict[str, Any]:
    status: dict[str, Any] = wait_for(
        lambda: (
            (
                (s := get(cp, "ek", name, namespace).get("status", {}))
                and s.get("version") == version
            )
            and s
        ),
        f"status.version {version}",
        operator,
    )
    return status


@pytest.mark.parametrize("backend", BACKENDS)
def test_lifecycle_and_a_client_across_rotation(
    backend: str,
    cloud: CloudStack,
    crds: ControlPlane,
    cl_namespace: str,
    cl_tenant: str,
    operator_database: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    kms, operator, namespace, tenant = cloud.kms[backend], cloud.operator, cl_namespace, cl_tenant
    provider = _provider(crds, kms, namespace, operator)
    apply(
        crds,
        _key(
            "phi",
            namespace,
            tenant,
            provider,
            rollback={"window": "1h"},
            deletionPolicy="ScheduleDeletion",
            deletionWindowDays=7,
        ),
    )
    kubectl(crds, "wait", "--for=condition=Ready", "--timeout=60s", "-n", namespace, "ek/phi")
    assert statuses(ledger_sessions, tenant, "phi") == [(1, "ACTIVE")]

    with KeyledgerClient(operator_database, [kms.view], version_check_s=0) as client:
        before = client.encrypt(tenant, "phi", PHI, CONTEXT)
        annotate(crds, namespace, "phi", rotate_requested_at="rotate-1")
        _wait_version(crds, namespace, "phi", 2, operator)
        after = client.encrypt(tenant, "phi", PHI, CONTEXT)
        assert before != after
        assert client.decrypt(before, CONTEXT, tenant=tenant) == PHI
        assert client.decrypt(after, CONTEXT, tenant=tenant) == PHI
    assert statuses(ledger_sessions, tenant, "phi") == [(2, "ACTIVE"), (1, "ROTATED")]
    v1, v2 = rows(ledger_sessions, tenant, "phi")[1], rows(ledger_sessions, tenant, "phi")[0]
    assert v1.kms_key_id and v2.kms_key_id and v1.kms_key_id != v2.kms_key_id

    annotate(crds, namespace, "phi", rollback_requested_at="rollback-1")
    ek = wait_condition(
        crds,
        "ek",
        "phi",
        "RollbackAvailable",
        namespace=namespace,
        operator=operator,
        status="False",
    )
    assert (ek["status"]["version"], ek["status"]["kmsKeyRef"]) == (1, v1.kms_key_id)
    assert statuses(ledger_sessions, tenant, "phi") == [(2, "INACTIVE"), (1, "ACTIVE")]

    annotate(crds, namespace, "phi", compromised_requested_at="inc-7", compromise_reason="leaked")
    # Version 1 is disabled in the KMS for good; a new version 3 is rotated in, and
    # version 2, rolled back away from, stays out of service.
    wait_for(
        lambda: (
            statuses(ledger_sessions, tenant, "phi")
            == [(3, "ACTIVE"), (2, "INACTIVE"), (1, "COMPROMISED")]
        ),
        "compromise",
        operator,
    )
    assert kms.view.describe(v1.kms_key_id).state is KmsKeyState.DISABLED
    assert wait_for_event(crds, namespace, "phi", "KeyCompromised")["type"] == "Warning"
    wait_condition(crds, "ek", "phi", "Ready", namespace=namespace, operator=operator)

    kubectl(crds, "delete", "-n", namespace, "ek/phi", "--timeout=60s")
    scheduled = [r for r in rows(ledger_sessions, tenant, "phi") if r.version != 1]
    assert scheduled
    for record in scheduled:
        assert record.kms_key_id is not None
        assert kms.view.describe(record.kms_key_id).state is KmsKeyState.PENDING_DELETION
        events = [e.event_type for e in audit(ledger_sessions, record)]
        assert KeyEventType.DELETION_SCHEDULED in events
    # The compromised version is out of service already: it stays disabled, as it was.
    assert kms.view.describe(v1.kms_key_id).state is KmsKeyState.DISABLED


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_version_disabled_behind_keyledgers_back_is_drift(
    backend: str,
    cloud: CloudStack,
    crds: ControlPlane,
    cl_namespace: str,
    cl_tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    kms, operator, namespace, tenant = cloud.kms[backend], cloud.operator, cl_namespace, cl_tenant
    provider = _provider(crds, kms, namespace, operator)
    apply(crds, _key("drifty", namespace, tenant, provider))
    wait_condition(crds, "ek", "drifty", "Ready", namespace=namespace, operator=operator)
    (record,) = rows(ledger_sessions, tenant, "drifty")
    assert record.kms_key_id is not None

    kms.disable_behind_the_back(record.kms_key_id)
    ek = wait_condition(crds, "ek", "drifty", "Drifted", namespace=namespace, operator=operator)
    ready = condition(ek, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "Drifted")
    assert wait_for_event(crds, namespace, "drifty", "DriftDetected")["type"] == "Warning"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_key_made_by_hand_is_adopted_and_can_be_rolled_back_to(
    backend: str,
    cloud: CloudStack,
    crds: ControlPlane,
    cl_namespace: str,
    cl_tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    kms, operator, namespace, tenant = cloud.kms[backend], cloud.operator, cl_namespace, cl_tenant
    provider = _provider(crds, kms, namespace, operator)
    existing = kms.make_key_by_hand()

    apply(
        crds,
        _key(
            "inherited",
            namespace,
            tenant,
            provider,
            adopt={"kmsKeyId": existing},
            rollback={"window": "1h"},
        ),
    )
    ek = wait_condition(crds, "ek", "inherited", "Ready", namespace=namespace, operator=operator)
    assert (ek["status"]["version"], ek["status"]["kmsKeyRef"]) == (1, existing)
    assert "existing KMS key" in wait_for_event(crds, namespace, "inherited", "Adopted")["message"]

    annotate(crds, namespace, "inherited", rotate_requested_at="rotate-1")
    status = _wait_version(crds, namespace, "inherited", 2, operator)
    assert status["kmsKeyRef"] != existing

    annotate(crds, namespace, "inherited", rollback_requested_at="rollback-1")
    status = _wait_version(crds, namespace, "inherited", 1, operator)
    assert status["kmsKeyRef"] == existing
    assert statuses(ledger_sessions, tenant, "inherited") == [(2, "INACTIVE"), (1, "ACTIVE")]


def test_wrong_credentials_heal_and_no_credential_shows_anywhere(
    cloud: CloudStack, crds: ControlPlane, cl_namespace: str, cl_tenant: str
) -> None:
    """Both backends at once: the 30 s provider re-check dominates, and is paid once."""
    operator, namespace = cloud.operator, cl_namespace
    for kms in cloud.kms.values():
        _provider(crds, kms, namespace, operator, credentials=kms.wrong_credentials, wait=False)
    for name, kms in cloud.kms.items():
        refused = condition(
            wait_condition(
                crds,
                "kp",
                name.lower(),
                "Ready",
                namespace=namespace,
                operator=operator,
                status="False",
            ),
            "Ready",
        )
        assert refused is not None
        message = refused["message"]
        assert not any(secret in message for secret in kms.secrets)  # before printing it
        assert "credentials" in message.lower(), f"{name}: {message}"
        apply(crds, _key(name.lower(), namespace, cl_tenant, name.lower()))

    for name, kms in cloud.kms.items():
        apply(crds, _secret(f"{name.lower()}-credentials", namespace, kms.credentials))
    for name in cloud.kms:
        wait_condition(
            crds, "ek", name.lower(), "Ready", namespace=namespace, operator=operator, timeout=90
        )

    places = {
        "operator log": operator.log_text(),
        "resources": kubectl(crds, "get", "ek,kp", "-A", "-o", "yaml").stdout,
        "events": kubectl(crds, "get", "events", "-A", "-o", "yaml").stdout,
    }
    # Labels only in the failure message: printing a found secret would leak it here.
    found = [
        f"{name} credential {number} in {where}"
        for name, kms in cloud.kms.items()
        for number, secret in enumerate(kms.secrets)
        for where, text in places.items()
        if secret in text
    ]
    assert found == []

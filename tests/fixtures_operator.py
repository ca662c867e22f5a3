"""pytest plugin: CRDs installed, the operator running as its ServiceAccount, a local provider.

One operator per test process, on PostgreSQL, against the real control plane.
Tests isolate themselves by namespace and tenant, never by restarting it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.orm import Session, sessionmaker

from keyledger.api import TENANT_LABEL
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from keyledger.store.models import EncryptionKeyRecord, KeyEventRecord
from keyledger.store.repository import KeyLedger
from tests.harness.controlplane import ControlPlane, kubectl, service_account_kubeconfig
from tests.harness.net import free_port
from tests.harness.operator import REPO_ROOT, OperatorProcess
from tests.harness.postgres import PostgresServer, create_database
from tests.harness.softhsm import softhsm

LOCAL_PROVIDER = "local-dev"
WEBHOOK_CONFIGURATION = "keyledger.io"


def install_crds_and_rbac(cp: ControlPlane) -> None:
    """CRDs, the operator's namespace and RBAC, applied as an administrator would."""
    kubectl(cp, "apply", "--server-side", "-k", str(REPO_ROOT / "crds"))
    for path in ("manifests/base/namespace.yaml", "manifests/base/rbac.yaml"):
        kubectl(cp, "apply", "--server-side", "-f", str(REPO_ROOT / path))
    kubectl(
        cp,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/encryptionkeys.keyledger.io",
        "crd/keyproviders.keyledger.io",
        "crd/clusterkeyproviders.keyledger.io",
    )


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds_and_rbac(control_plane)
    return control_plane


@pytest.fixture(scope="session")
def operator_database(postgres_server: PostgresServer) -> str:
    url = create_database(postgres_server, f"keyledger_operator_{uuid.uuid4().hex[:8]}")
    upgrade_database(url)
    return url


@pytest.fixture(scope="session")
def ledger_sessions(operator_database: str) -> sessionmaker[Session]:
    """Read access to the ledger the operator writes, to assert on its rows."""
    return make_session_factory(make_engine(operator_database))


def new_operator(
    cp: ControlPlane, database_url: str, state: Path, namespaces: tuple[str, ...], **env: str
) -> OperatorProcess:
    """An operator running as its ServiceAccount, serving `namespaces` (kopf patterns)."""
    kubeconfig = service_account_kubeconfig(
        cp, "keyledger-system", "keyledger-operator", state / "kubeconfig"
    )
    # Every operator checks every ClusterKeyProvider, PKCS#11 ones included, so each
    # must see the test tokens (SoftHSM reads its config once, at module load).
    softhsm()
    env = {"SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"], **env}
    return OperatorProcess(
        kubeconfig=kubeconfig,
        database_url=database_url,
        data_dir=state / "data",
        log_path=state / "operator.log",
        namespaces=namespaces,
        metrics_port=free_port(),
        extra_env=env,
    )


@pytest.fixture(scope="session")
def operator(
    crds: ControlPlane, operator_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The shared operator: serves namespaces `t-*`, where ordinary tests live."""
    # kopf watches ClusterKeyProviders once one of the operator's namespaces exists;
    # the provider fixtures need them before any test has made its own namespace.
    apply(crds, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t-shared"}})
    # It also serves the admission webhooks, for every test's keys: the API server
    # calls it at 127.0.0.1 over TLS, with the CA of the certificate it made.
    webhook_port = free_port()
    process = new_operator(
        crds,
        operator_database,
        tmp_path_factory.mktemp("operator"),
        ("t-*",),
        KEYLEDGER_WEBHOOK_PORT=str(webhook_port),
        KEYLEDGER_WEBHOOK_HOST="127.0.0.1",
        KEYLEDGER_WEBHOOK_LISTEN="127.0.0.1",
    )
    process.start()
    try:
        wait_for_webhooks(crds, process, webhook_port)
        yield process
    finally:
        process.stop()
        print(f"\noperator log: {process.log_path}")


@pytest.fixture(scope="session")
def local_provider(operator: OperatorProcess, crds: ControlPlane) -> str:
    """A ready ClusterKeyProvider on the dev-only local backend, open to every tenant."""
    apply(crds, provider_manifest(LOCAL_PROVIDER, {"local": {"keystore": "tests"}}))
    wait_condition(crds, "ckp", LOCAL_PROVIDER, "Ready", namespace=None, operator=operator)
    return LOCAL_PROVIDER


def wait_for_webhooks(cp: ControlPlane, operator: OperatorProcess, port: int) -> None:
    """Until both webhook configurations point at the operator's webhook server."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        urls = [
            webhook.get("clientConfig", {}).get("url", "")
            for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")
            for webhook in _webhooks(cp, kind)
        ]
        if len(urls) >= 2 and all(f"127.0.0.1:{port}/" in url for url in urls):
            return
        operator.assert_running()
        time.sleep(0.3)
    raise AssertionError(f"the webhooks never pointed at the operator\n{operator.log_tail()}")


def _webhooks(cp: ControlPlane, kind: str) -> list[dict[str, Any]]:
    found = kubectl(cp, "get", kind, WEBHOOK_CONFIGURATION, "-o", "json", check=False)
    if found.returncode != 0:
        return []
    webhooks: list[dict[str, Any]] = json.loads(found.stdout).get("webhooks") or []
    return webhooks


def tenant_namespace(cp: ControlPlane, name: str, tenant: str) -> str:
    """A namespace bound to `tenant` (label keyledger.io/tenant), as the operator's
    default strict tenant binding requires of a namespace holding keys."""
    apply(
        cp,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {TENANT_LABEL: tenant}},
        },
    )
    return name


def bind_namespace(cp: ControlPlane, namespace: str, tenant: str) -> None:
    """Bind an existing namespace to `tenant`."""
    kubectl(cp, "label", "--overwrite", "namespace", namespace, f"{TENANT_LABEL}={tenant}")


@pytest.fixture
def namespace(crds: ControlPlane, tenant: str) -> Iterator[str]:
    yield tenant_namespace(crds, f"t-{uuid.uuid4().hex[:10]}", tenant)


@pytest.fixture
def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_key(
    crds: ControlPlane, namespace: str, tenant: str, local_provider: str
) -> Callable[..., dict[str, Any]]:
    """Apply an EncryptionKey in the test's namespace; returns the manifest applied."""

    def make(name: str = "phi-primary", **spec: Any) -> dict[str, Any]:
        manifest = encryption_key(name, namespace, tenant=tenant, provider=local_provider, **spec)
        apply(crds, manifest)
        return manifest

    return make


# -- helpers the tests share --------------------------------------------------------


def encryption_key(
    name: str, namespace: str, *, tenant: str, provider: str, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tenant": tenant,
        "keyType": "PHI_DATA",
        "providerRef": {"kind": "ClusterKeyProvider", "name": provider},
        "purpose": "PHI columns of the records service",
        "complianceTags": {"hipaa": "true"},
        "authorizedServices": ["records-api"],
    }
    body.update(spec)
    return {
        "apiVersion": "keyledger.io/v1alpha1",
        "kind": "EncryptionKey",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def provider_manifest(
    name: str, spec: dict[str, Any], namespace: str | None = None
) -> dict[str, Any]:
    """A ClusterKeyProvider, or a KeyProvider when `namespace` is given."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    kind = "KeyProvider" if namespace is not None else "ClusterKeyProvider"
    return {"apiVersion": "keyledger.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


def apply(cp: ControlPlane, manifest: dict[str, Any], *, check: bool = True) -> Any:
    return kubectl(cp, "apply", "-f", "-", input=yaml.safe_dump(manifest), check=check)


def get(cp: ControlPlane, kind: str, name: str, namespace: str | None) -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    result: dict[str, Any] = json.loads(kubectl(cp, *args).stdout)
    return result


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for entry in obj.get("status", {}).get("conditions", []):
        if entry["type"] == type_:
            return dict(entry)
    return None


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    found = condition(obj, "Ready")
    assert found is not None, f"no Ready condition in {obj.get('status')}"
    return found


def wait_condition(
    cp: ControlPlane,
    kind: str,
    name: str,
    type_: str,
    *,
    namespace: str | None,
    operator: OperatorProcess,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Poll until the condition has `status` (and `reason`); returns the object."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = get(cp, kind, name, namespace)
        found = condition(last, type_)
        if found and found["status"] == status and (reason is None or found["reason"] == reason):
            return last
        operator.assert_running()
        time.sleep(0.3)
    raise AssertionError(
        f"{kind}/{name} never reached {type_}={status} ({reason}); last status: "
        f"{json.dumps(last.get('status'), indent=1)}\noperator log:\n{operator.log_tail()}"
    )


def wait_not_ready(
    cp: ControlPlane, name: str, reason: str, *, namespace: str, operator: OperatorProcess
) -> dict[str, Any]:
    """Poll until EncryptionKey `name` is Ready=False for `reason`; returns it."""
    return wait_condition(
        cp,
        "ek",
        name,
        "Ready",
        namespace=namespace,
        operator=operator,
        status="False",
        reason=reason,
    )


def events_for(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    out = kubectl(
        cp,
        "get",
        "events",
        "-n",
        namespace,
        "-o",
        "json",
        "--field-selector",
        f"involvedObject.name={name}",
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def wait_for_event(
    cp: ControlPlane, namespace: str, name: str, reason: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events_for(cp, namespace, name):
            if event["reason"] == reason:
                return event
        time.sleep(0.3)
    raise AssertionError(
        f"no {reason} event for {name}: {[e['reason'] for e in events_for(cp, namespace, name)]}"
    )


def rows(sessions: sessionmaker[Session], tenant: str, key: str) -> list[EncryptionKeyRecord]:
    with sessions() as session:
        return list(KeyLedger(session).versions(tenant, key))


def audit(sessions: sessionmaker[Session], record: EncryptionKeyRecord) -> list[KeyEventRecord]:
    with sessions() as session:
        return list(KeyLedger(session).events(record.id))


def wait_for(
    predicate: Callable[[], Any], what: str, operator: OperatorProcess, timeout: float = 60
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        operator.assert_running()
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{operator.log_tail()}")


def statuses(sessions: sessionmaker[Session], tenant: str, key: str) -> list[tuple[int, str]]:
    return [(r.version, r.status.value) for r in rows(sessions, tenant, key)]


def annotate(cp: ControlPlane, namespace: str, name: str, **values: str) -> None:
    pairs = [f"keyledger.io/{k.replace('_', '-')}={v}" for k, v in values.items()]
    kubectl(cp, "annotate", "--overwrite", "-n", namespace, f"ek/{name}", *pairs)

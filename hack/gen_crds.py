"""Generates crds/*.yaml. The provider backends' schema is shared by both provider kinds.

Run `make crds` after editing; a test fails when crds/ and this file disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from keyledger.providers.registry import BACKEND_FIELDS

GROUP = "keyledger.io"
VERSION = "v1alpha1"
DURATION = {
    "type": "string",
    "pattern": "^([0-9]+[smhd])+$",
    "description": "A duration: a number and a unit s, m, h or d, e.g. 90d, 12h, 1h30m.",
    "maxLength": 32,
    # A zero period would rotate without end; refused at admission, not at reconcile.
    "x-kubernetes-validations": [
        {"rule": "self.matches('[1-9]')", "message": "must be a positive duration, e.g. 1h"}
    ],
}
DNS_LABEL = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
}
KEY_TYPES = [
    "PHI_DATA",
    "PII_DATA",
    "FINANCIAL",
    "CLINICAL",
    "AUDIT_LOG",
    "BACKUP",
    "COMMUNICATION",
]
PHASES = ["PENDING", "ACTIVE", "INACTIVE", "ROTATED", "EXPIRED", "COMPROMISED"]


def obj(
    properties: dict[str, Any],
    required: list[str] | None = None,
    *,
    validations: list[dict[str, str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An object schema; `validations` become its x-kubernetes-validations (CEL rules)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema.update(extra)
    if validations:
        schema["x-kubernetes-validations"] = validations
    return schema


def string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def immutable(field: str, why: str) -> dict[str, Any]:
    return {
        "rule": f"self.{field} == oldSelf.{field}",
        "message": f"{field} is immutable: {why}",
        "fieldPath": f".{field}",
        "reason": "FieldValueForbidden",
    }


CONDITION = obj(
    {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "observedGeneration": {"type": "integer", "format": "int64"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
    },
    ["type", "status"],
)
CONDITIONS = {
    "type": "array",
    "items": CONDITION,
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}

VERSION_ENTRY = obj(
    {
        "version": {"type": "integer"},
        "phase": {"type": "string", "enum": PHASES},
        "keyId": {"type": "string"},
        "kmsKeyRef": {"type": "string"},
        "activatedAt": {"type": "string", "format": "date-time"},
        "rotatedAt": {"type": "string", "format": "date-time"},
        "expiresAt": {"type": "string", "format": "date-time"},
        "rollbackExpiresAt": {"type": "string", "format": "date-time"},
        "lastUsedAt": {"type": "string", "format": "date-time"},
    }
)

ENCRYPTION_KEY_SPEC = obj(
    {
        "tenant": {**DNS_LABEL, "description": "Tenant that owns the key. Immutable."},
        "keyName": string(
            "Key name, unique per tenant; defaults to metadata.name. Immutable.",
            minLength=1,
            maxLength=200,
            pattern="^[A-Za-z0-9_.-]+$",
        ),
        "keyType": string("What the key protects. Immutable.", enum=KEY_TYPES),
        "providerRef": obj(
            {
                "kind": string(
                    "ClusterKeyProvider, or KeyProvider in this namespace.",
                    enum=["ClusterKeyProvider", "KeyProvider"],
                ),
                "name": {
                    **DNS_LABEL,
                    "maxLength": 253,
                    "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                },
            },
            ["kind", "name"],
            description="The provider (KMS) that holds the key. Immutable.",
        ),
        "algorithm": string(
            "Data-encryption algorithm.", enum=["AES-256-GCM"], default="AES-256-GCM"
        ),
        "purpose": string("What the key is for, recorded in the ledger.", maxLength=1024),
        "complianceTags": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "maxProperties": 32,
        },
        "authorizedServices": {
            "type": "array",
            "items": {"type": "string", "maxLength": 253},
            "maxItems": 64,
        },
        "accessPolicy": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": "Free-form policy document, recorded in the ledger.",
        },
        "state": string(
            "Desired state: Inactive stops new encryption with the key.",
            enum=["Active", "Inactive"],
            default="Active",
        ),
        "rotation": obj(
            {"period": DURATION},
            description="Scheduled rotation; absent means manual rotation only.",
        ),
        "rollback": obj(
            {"window": DURATION},
            description="How long the previous version can be made primary again; shorter "
            "than rotation.period (default 7d, or half the rotation period if shorter).",
        ),
        "expiry": obj(
            {
                "after": DURATION,
                "at": {"type": "string", "format": "date-time"},
                "warnBefore": DURATION,
            },
            description="When versions expire: `after` activation (longer than "
            "rotation.period), or `at` a fixed time (the end of the key's use).",
            validations=[
                {
                    "rule": "!(has(self.after) && has(self.at))",
                    "message": "set either expiry.after or expiry.at, not both",
                }
            ],
        ),
        "deletionPolicy": string(
            "What deleting the resource does to the KMS key.",
            enum=["Retain", "Disable", "ScheduleDeletion"],
            default="Retain",
        ),
        "deletionWindowDays": {
            "type": "integer",
            "minimum": 7,
            "maximum": 30,
            "default": 30,
            "description": "Days before scheduled deletion happens.",
        },
        "adopt": obj(
            {
                "kmsKeyId": string(
                    "Existing KMS key to take over as version 1, as the provider refers to it "
                    "(key ARN, PKCS#11 URI, ...); rotations make new keys as usual.",
                    minLength=1,
                )
            },
            ["kmsKeyId"],
        ),
    },
    ["tenant", "keyType", "providerRef"],
    validations=[
        immutable("tenant", "create a new EncryptionKey for another tenant"),
        immutable("keyType", "create a new EncryptionKey for another key type"),
        immutable("providerRef", "keys cannot move between providers; create a new EncryptionKey"),
        {
            "rule": "has(self.keyName) == has(oldSelf.keyName) && "
            "(!has(self.keyName) || self.keyName == oldSelf.keyName)",
            "message": "keyName is immutable: create a new EncryptionKey for another key name",
            "fieldPath": ".keyName",
            "reason": "FieldValueForbidden",
        },
        {
            # Adoption happens once, for the first version; a later edit could not act.
            "rule": "has(self.adopt) == has(oldSelf.adopt) && "
            "(!has(self.adopt) || self.adopt == oldSelf.adopt)",
            "message": "adopt is immutable: it is read once, when the first version is "
            "made; to adopt another KMS key, create a new EncryptionKey",
            "fieldPath": ".adopt",
            "reason": "FieldValueForbidden",
        },
    ],
)

ENCRYPTION_KEY_STATUS = obj(
    {
        "phase": {"type": "string", "enum": PHASES},
        "version": {"type": "integer"},
        "keyId": {"type": "string"},
        "kmsKeyRef": {"type": "string"},
        "activatedAt": {"type": "string", "format": "date-time"},
        "expiresAt": {"type": "string", "format": "date-time"},
        "rotatedAt": {"type": "string", "format": "date-time"},
        "lastUsedAt": {"type": "string", "format": "date-time"},
        "nextRotationAt": {"type": "string", "format": "date-time"},
        "rollbackExpiresAt": {"type": "string", "format": "date-time"},
        "previousVersion": VERSION_ENTRY,
        "versions": {"type": "array", "items": VERSION_ENTRY},
        "conditions": CONDITIONS,
        "observedGeneration": {"type": "integer", "format": "int64"},
        "lastHandledRequests": {"type": "object", "additionalProperties": {"type": "string"}},
    }
)

SECRET_REF = obj(
    {"name": DNS_LABEL | {"maxLength": 253, "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}},
    ["name"],
    description="Secret holding the backend's credentials.",
)
BACKEND_SCHEMAS = {
    "awsKms": obj(
        {
            "region": string("AWS region.", minLength=1),
            "endpoint": string("KMS endpoint URL override."),
        },
        ["region"],
    ),
    "azureKeyVault": obj(
        {
            "vaultUrl": string("https://<name>.vault.azure.net/", pattern="^https://"),
            "keyType": string(
                "RSA for standard vaults; oct-HSM on Managed HSM.",
                enum=["RSA", "RSA-HSM", "oct-HSM"],
                default="RSA",
            ),
            "authorityHost": string(
                "Entra ID authority for a sovereign cloud, e.g. https://login.microsoftonline.us; "
                "default: the public cloud.",
                pattern="^https://",
            ),
        },
        ["vaultUrl"],
    ),
    "vault": obj(
        {
            "address": string("Vault/OpenBao address.", pattern="^https?://"),
            "mount": string("Transit mount path.", default="transit"),
            "namespace": string("Vault Enterprise / OpenBao namespace."),
            "stateMount": string(
                "KV v2 mount where keyledger keeps per-version state (disabled, deletion "
                "date, idempotency marker) next to the transit keys.",
                default="secret",
            ),
            "statePath": string(
                "Path under stateMount for keyledger's state documents.", default="keyledger"
            ),
            "auth": obj(
                {
                    "method": string(
                        "token (from credentialsRef) or kubernetes.",
                        enum=["token", "kubernetes"],
                        default="token",
                    ),
                    "role": string("Role for kubernetes auth."),
                    "mountPath": string("Auth mount for kubernetes auth.", default="kubernetes"),
                    "tokenPath": string(
                        "ServiceAccount token file for kubernetes auth, e.g. a projected "
                        "token with a Vault audience.",
                        default="/var/run/secrets/kubernetes.io/serviceaccount/token",
                    ),
                }
            ),
        },
        ["address"],
    ),
    "gcpKms": obj(
        {
            "project": string("GCP project id.", minLength=1),
            "location": string("KMS location, e.g. global or europe-west1.", minLength=1),
            "keyRing": string("Key ring name; default: one per tenant."),
            "endpoint": string("API endpoint override (host:port)."),
            "destroyScheduledDays": {
                "type": "integer",
                "minimum": 1,
                "maximum": 120,
                "default": 30,
                "description": "Days GCP keeps a destroyed version before destroying it; fixed "
                "per CryptoKey when keyledger creates it. deletionWindowDays must not exceed it.",
            },
            "insecure": {
                "type": "boolean",
                "default": False,
                "description": "Plaintext gRPC, for emulators only.",
            },
        },
        ["project", "location"],
    ),
    "pkcs11": obj(
        {
            "modulePath": string("Path of the PKCS#11 module (.so) on the operator.", minLength=1),
            "tokenLabel": string("Token label.", minLength=1),
        },
        ["modulePath", "tokenLabel"],
    ),
    "local": obj(
        {
            "keystore": {
                **DNS_LABEL,
                "default": "default",
                "description": "Keystore file name. DEV ONLY: software keys.",
            }
        },
        description="DEV ONLY: software keys in a file on the operator's disk.",
    ),
}
if set(BACKEND_SCHEMAS) != set(BACKEND_FIELDS):  # the registry is the list of backends
    raise RuntimeError(
        f"hack/gen_crds.py: BACKEND_SCHEMAS has {sorted(BACKEND_SCHEMAS)}, "
        f"the registry has {sorted(BACKEND_FIELDS)}; give each registered backend a schema"
    )
ONE_BACKEND = {
    "rule": "["
    + ", ".join(f"has(self.{field})" for field in BACKEND_FIELDS)
    + "].filter(x, x).size() == 1",
    "message": "set exactly one backend: " + ", ".join(BACKEND_FIELDS),
}


def provider_spec(cluster: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {field: BACKEND_SCHEMAS[field] for field in BACKEND_FIELDS}
    credentials = SECRET_REF
    if cluster:
        credentials = obj(
            {**SECRET_REF["properties"], "namespace": DNS_LABEL},
            ["name"],
            description="Secret with the credentials; namespace defaults to the operator's.",
        )
        properties["allowedTenants"] = {
            "type": "array",
            "items": DNS_LABEL,
            "x-kubernetes-list-type": "set",
            "description": "Tenants that may use this provider; empty means all.",
        }
        properties["namespaceSelector"] = obj(
            {
                "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                "matchExpressions": {
                    "type": "array",
                    "items": obj(
                        {
                            "key": {"type": "string", "minLength": 1},
                            "operator": string(
                                "How the label is compared.",
                                enum=["In", "NotIn", "Exists", "DoesNotExist"],
                            ),
                            "values": {"type": "array", "items": {"type": "string"}},
                        },
                        ["key", "operator"],
                    ),
                },
            },
            description="Namespaces whose EncryptionKeys may use this provider (a label "
            "selector); absent means every namespace. Combined with allowedTenants.",
        )
    properties["credentialsRef"] = credentials
    rules = [ONE_BACKEND]
    if not cluster:
        rules.append(
            {
                "rule": "!has(self.pkcs11)",
                "message": "pkcs11 makes the operator load a shared library named by "
                "spec.pkcs11.modulePath, so only a ClusterKeyProvider (cluster admins) may use it",
                "fieldPath": ".pkcs11",
            }
        )
    return obj(properties, validations=rules)


PROVIDER_STATUS = obj(
    {
        "backend": {"type": "string"},
        "conditions": CONDITIONS,
        "observedGeneration": {"type": "integer", "format": "int64"},
    }
)

READY_COLUMN = {
    "name": "Ready",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
}
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def crd(  # mirrors the CRD's own fields, read side by side
    kind: str,
    plural: str,
    short: str,
    scope: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["keyledger"],
            },
            "scope": scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": obj(
                            {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            ["spec"],
                        )
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    provider_columns: list[dict[str, Any]] = [
        {"name": "Backend", "type": "string", "jsonPath": ".status.backend"},
        READY_COLUMN,
        {
            "name": "Message",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
        },
        AGE_COLUMN,
    ]
    return {
        "encryptionkeys.yaml": crd(
            "EncryptionKey",
            "encryptionkeys",
            "ek",
            "Namespaced",
            ENCRYPTION_KEY_SPEC,
            ENCRYPTION_KEY_STATUS,
            [
                {"name": "Tenant", "type": "string", "jsonPath": ".spec.tenant"},
                {"name": "Type", "type": "string", "jsonPath": ".spec.keyType"},
                {"name": "Provider", "type": "string", "jsonPath": ".spec.providerRef.name"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Version", "type": "integer", "jsonPath": ".status.version"},
                READY_COLUMN,
                {"name": "Next Rotation", "type": "string", "jsonPath": ".status.nextRotationAt"},
                {
                    "name": "Reason",
                    "type": "string",
                    "priority": 1,
                    "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                },
                {
                    "name": "Expires",
                    "type": "string",
                    "priority": 1,
                    "jsonPath": ".status.expiresAt",
                },
                {
                    "name": "Last Used",
                    "type": "string",
                    "priority": 1,
                    "jsonPath": ".status.lastUsedAt",
                },
                AGE_COLUMN,
            ],
        ),
        "keyproviders.yaml": crd(
            "KeyProvider",
            "keyproviders",
            "kp",
            "Namespaced",
            provider_spec(cluster=False),
            PROVIDER_STATUS,
            provider_columns,
        ),
        "clusterkeyproviders.yaml": crd(
            "ClusterKeyProvider",
            "clusterkeyproviders",
            "ckp",
            "Cluster",
            provider_spec(cluster=True),
            PROVIDER_STATUS,
            provider_columns,
        ),
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes a shared schema out in full each time: CRDs are read by people and by
    tools that do not follow YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(document: dict[str, Any]) -> str:
    header = "# Generated by hack/gen_crds.py; edit that file and run `make crds`.\n"
    return header + yaml.dump(document, Dumper=_PlainDumper, sort_keys=False, width=100)


def main() -> int:
    out = Path(__file__).resolve().parent.parent / "crds"
    out.mkdir(exist_ok=True)
    for name, document in all_crds().items():
        (out / name).write_text(render(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())

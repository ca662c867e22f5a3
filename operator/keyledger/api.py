"""Names of keyledger's Kubernetes API: group, version, kinds, annotations."""

GROUP = "keyledger.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

ENCRYPTION_KEYS = "encryptionkeys"
KEY_PROVIDERS = "keyproviders"
CLUSTER_KEY_PROVIDERS = "clusterkeyproviders"

FINALIZER = "keyledger.io/finalizer"
# kopf's own bookkeeping lives under a separate prefix so that it never
# collides with the user-facing keyledger.io/* annotations.
KOPF_ANNOTATION_PREFIX = "operator.keyledger.io"

ROTATE_REQUESTED_AT = "keyledger.io/rotate-requested-at"
ROLLBACK_REQUESTED_AT = "keyledger.io/rollback-requested-at"
COMPROMISED_REQUESTED_AT = "keyledger.io/compromised-requested-at"
COMPROMISE_REASON = "keyledger.io/compromise-reason"
# "true" freezes a key: no KMS or ledger changes until it is removed (drift is still checked).
PAUSED = "keyledger.io/paused"

# Set by the admission webhook only: who asked for the key's creation, its current
# spec and each pending request. Users cannot forge it (the webhook recomputes it
# from the stored object on every write); a write that bypassed the webhook leaves
# a record that does not match, and the change is audited as unattributed.
REQUESTERS = "keyledger.io/requesters"
# Namespace label binding a namespace to one tenant.
TENANT_LABEL = "keyledger.io/tenant"

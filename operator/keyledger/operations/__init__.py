"""Operations that combine the pure lifecycle, the ledger and a KMS backend.

No kopf here: handlers turn kopf's arguments into these calls and apply the
returned outcome (status, events) back to the resource.
"""

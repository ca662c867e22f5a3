"""The ledger: references to keys (never key material) and their audit trail."""

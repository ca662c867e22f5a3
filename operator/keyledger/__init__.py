"""keyledger: a Kubernetes operator that manages per-tenant encryption keys in external KMSes."""

__version__ = "0.1.0"

"""Operator settings, read once from the environment (prefix KEYLEDGER_)."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keyledger.domain import TenantBinding
from keyledger.lifecycle.durations import parse_duration


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "keyledger"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYLEDGER_", extra="ignore")

    # Ledger database. Unset means the embedded SQLite file under data_dir:
    # fine for a demo, not for more than one operator replica.
    database_url: SecretStr | None = None
    # Run `alembic upgrade head` when the operator starts.
    migrate_on_start: bool = True
    data_dir: Path = Field(default_factory=_default_data_dir)
    # Where the dev-only `local` backend keeps its software keys; one JSON file
    # per `local.keystore` name. Never inside the database.
    local_keystore_dir: Path | None = None
    # Namespace the operator runs in: ClusterKeyProvider credentialsRef Secrets
    # without a namespace are read from here.
    operator_namespace: str = "keyledger-system"
    # Who the ledger names as the actor of operator-driven transitions.
    actor: str = "keyledger-operator"
    # How often each key's current version is compared with the KMS. Each key
    # starts at a random point of the interval and jitters by 10%, so checks of
    # many keys spread out instead of arriving together.
    drift_interval: timedelta = timedelta(minutes=10)
    # Namespaces whose EncryptionKeys and KeyProviders this operator serves:
    # comma-separated glob patterns, empty for all. They become kopf's own
    # --namespace scope, so an operator never sees (and never touches the
    # finalizers of) another operator's keys; ClusterKeyProviders are seen by all.
    namespaces: str = ""
    # Passes run at once (kopf's handler threads). Passes hold Python's lock while
    # they compute and let go while they wait on the ledger and the KMS: more threads
    # help a KMS that answers slowly, and past 8 cost more than they gain on a fast
    # one (1,000 keys on the local provider: 4 threads 27 s, 8 28 s, 16 31-39 s).
    handler_threads: int = Field(default=8, ge=1, le=24)
    # Prometheus metrics on this port (0: off); /readyz is served beside /metrics.
    metrics_port: int = 9090
    # Namespaces without the keyledger.io/tenant label: `strict` refuses keys in
    # them, `permissive` lets them hold keys of any tenant (single-team clusters).
    tenant_binding: TenantBinding = TenantBinding.STRICT
    # Admission webhooks (requester identity, the rules that need a lookup) on this
    # port; 0: not served. `webhook_host` is the name the API server calls them by
    # (a Service DNS name in a cluster), `webhook_listen` the address bound.
    webhook_port: int = 0
    webhook_host: str = "localhost"
    webhook_listen: str = "0.0.0.0"  # noqa: S104  # a webhook must be reachable
    # Serving certificate: tls.crt, tls.key and ca.crt there are used as they are
    # (a cert-manager Secret mounted); otherwise keyledger makes and renews its own.
    webhook_cert_dir: Path | None = None
    # The [Validating|Mutating]WebhookConfiguration keyledger keeps pointed at
    # itself; empty when they are installed from manifests (cert-manager's CA injector).
    webhook_configuration: str = "keyledger.io"
    # The Alembic `migrations/` directory; unset means the repository's own,
    # next to the package (an installed package must name it).
    migrations_dir: Path | None = None
    # Crash-safety tests only: comma-separated failpoint names (see
    # keyledger.failpoints) at which the process kills itself. Empty in production.
    failpoints: Annotated[frozenset[str], NoDecode] = frozenset()
    # kopf peering: replicas sharing this ClusterKopfPeering name elect one active
    # operator, the others stand by. Empty: standalone (a single replica).
    # Operators that split namespaces (KEYLEDGER_NAMESPACES) each need their own name.
    peering: str = ""
    # This replica's priority among its peers (the highest acts). Unset: random,
    # because kopf pauses every peer when two share a priority.
    peering_priority: int | None = None
    # Seconds a silent peer is still believed alive: a killed active replica is
    # replaced after at most this long.
    peering_lifetime: int = Field(default=15, ge=5)

    @field_validator("drift_interval", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        # The same spelling as durations in specs: 10m, 30s, 1h.
        if isinstance(value, str) and value and value[-1] in "smhd":
            return parse_duration(value, "KEYLEDGER_DRIFT_INTERVAL")
        return value

    @field_validator("migrations_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("failpoints", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(name.strip() for name in value.split(",") if name.strip())
        return value

    def namespace_patterns(self) -> list[str]:
        return [p.strip() for p in self.namespaces.split(",") if p.strip()]

    def ledger_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'ledger.db'}"

    def webhook_certificates_dir(self) -> Path:
        return self.webhook_cert_dir or self.data_dir / "webhook-tls"

    def keystore_dir(self) -> Path:
        return self.local_keystore_dir or self.data_dir / "local-keystores"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

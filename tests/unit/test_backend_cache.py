"""BackendCache: one backend per provider configuration, Secrets read sparingly."""

from __future__ import annotations

from pathlib import Path

from keyledger.lifecycle.spec import ProviderKind
from keyledger.operations.backends import SECRET_TTL_SECONDS, BackendCache
from keyledger.operations.providers import ProviderView
from keyledger.settings import Settings


def test_secret_is_read_once_per_ttl_and_a_changed_secret_reopens(tmp_path: Path) -> None:
    reads: list[tuple[str, str]] = []
    secret = {"token": "one"}
    now = [0.0]

    def read_secret(namespace: str, name: str) -> dict[str, str]:
        reads.append((namespace, name))
        return dict(secret)

    cache = BackendCache(Settings(data_dir=tmp_path), read_secret, clock=lambda: now[0])
    view = ProviderView(
        kind=ProviderKind.NAMESPACED,
        namespace="ns",
        name="p",
        backend="local",
        options={"keystore": "k"},
        credentials_ref={"name": "creds"},
        ready=True,
    )
    first = cache.open(view)
    for _ in range(100):
        assert cache.open(view) is first
    assert reads == [("ns", "creds")]

    secret["token"] = "two"
    now[0] += SECRET_TTL_SECONDS + 1
    reopened = cache.open(view)
    assert reads == [("ns", "creds")] * 2
    assert reopened is not first  # new credentials, new client

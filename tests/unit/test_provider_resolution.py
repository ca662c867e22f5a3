"""Which provider a key may use, and why not."""

from __future__ import annotations

import pytest

from keyledger.errors import InvalidSpec, ProviderNotReady
from keyledger.lifecycle.spec import ProviderKind, ProviderRef
from keyledger.operations.providers import ProviderView, resolve_provider

READY = {"conditions": [{"type": "Ready", "status": "True", "message": "ok"}]}


def _cluster(name: str, spec: dict[str, object], status: dict[str, object] = READY) -> ProviderView:
    return ProviderView.from_resource(ProviderKind.CLUSTER, None, name, spec, status)


def _resolve(
    ref: ProviderRef, views: dict[str, ProviderView], tenant: str = "acme"
) -> ProviderView:
    return resolve_provider(
        ref, key_namespace="ns", tenant=tenant, cluster_providers=views, namespaced_providers={}
    )


def test_ready_provider_resolves() -> None:
    view = _cluster("dev", {"local": {}})
    assert _resolve(ProviderRef(ProviderKind.CLUSTER, "dev"), {"dev": view}) is view


@pytest.mark.parametrize(
    ("views", "tenant", "reason"),
    [
        ({}, "acme", "ProviderNotFound"),
        (
            {"dev": _cluster("dev", {"local": {}, "allowedTenants": ["other"]})},
            "acme",
            "ProviderNotAllowed",
        ),
        ({"dev": _cluster("dev", {"local": {}}, {})}, "acme", "ProviderNotReady"),
    ],
)
def test_unusable_provider_says_why(
    views: dict[str, ProviderView], tenant: str, reason: str
) -> None:
    with pytest.raises(ProviderNotReady) as raised:
        _resolve(ProviderRef(ProviderKind.CLUSTER, "dev"), views, tenant)
    assert raised.value.reason == reason


def test_namespaced_ref_looks_in_the_key_namespace_only() -> None:
    view = ProviderView.from_resource(ProviderKind.NAMESPACED, "other", "kp", {"local": {}}, READY)
    with pytest.raises(ProviderNotReady, match="namespace 'ns'"):
        resolve_provider(
            ProviderRef(ProviderKind.NAMESPACED, "kp"),
            key_namespace="ns",
            tenant="acme",
            cluster_providers={},
            namespaced_providers={("other", "kp"): view},
        )


def test_provider_with_two_backends_is_invalid() -> None:
    with pytest.raises(InvalidSpec, match="exactly one backend"):
        _cluster("two", {"local": {}, "vault": {"address": "http://x"}})

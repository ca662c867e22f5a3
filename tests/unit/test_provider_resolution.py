"""Which provider a key may use, and why not."""

from __future__ import annotations

import pytest

from keyledger.errors import InvalidSpec, ProviderNotReady
from keyledger.lifecycle.spec import ProviderKind, ProviderRef
from keyledger.operations.providers import ProviderView, resolve_provider, selector_matches

READY: dict[str, object] = {"conditions": [{"type": "Ready", "status": "True", "message": "ok"}]}
NOT_READY: dict[str, object] = {
    "conditions": [{"type": "Ready", "status": "False", "message": "unreachable"}]
}


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
        ({"dev": _cluster("dev", {"local": {}}, {})}, "acme", "ProviderNotCheckedYet"),
        ({"dev": _cluster("dev", {"local": {}}, NOT_READY)}, "acme", "ProviderNotReady"),
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


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"matchLabels": {"team": "phi"}}, {"team": "phi", "x": "y"}, True),
        ({"matchLabels": {"team": "phi"}}, {"team": "pii"}, False),
        (
            {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
            {"env": "prod"},
            True,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}, {}, False),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]},
            {"env": "dev"},
            False,
        ),
        ({"matchExpressions": [{"key": "pci", "operator": "Exists"}]}, {"pci": ""}, True),
        ({"matchExpressions": [{"key": "pci", "operator": "DoesNotExist"}]}, {"pci": "1"}, False),
    ],
)
def test_namespace_selector(
    selector: dict[str, object], labels: dict[str, str], matches: bool
) -> None:
    assert selector_matches(selector, labels) is matches


def test_namespace_selector_refuses_with_the_field_named() -> None:
    view = _cluster("sel", {"local": {}, "namespaceSelector": {"matchLabels": {"phi": "yes"}}})
    ref = ProviderRef(ProviderKind.CLUSTER, "sel")
    with pytest.raises(ProviderNotReady, match=r"spec\.namespaceSelector") as raised:
        resolve_provider(
            ref,
            key_namespace="ns",
            tenant="acme",
            cluster_providers={"sel": view},
            namespaced_providers={},
            namespace_labels={"phi": "no"},
        )
    assert raised.value.reason == "ProviderNotAllowed"
    assert (
        resolve_provider(
            ref,
            key_namespace="ns",
            tenant="acme",
            cluster_providers={"sel": view},
            namespaced_providers={},
            namespace_labels={"phi": "yes"},
        )
        is view
    )

"""The few direct Kubernetes API reads the operator makes besides kopf's watches."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from keyledger.errors import ProviderNotReady


def load_kubernetes_config() -> None:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped upstream
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]  # untyped upstream


def read_secret(namespace: str, name: str) -> Mapping[str, str]:
    """A Secret's data, decoded. Errors name the Secret, never its contents."""
    try:
        secret = client.CoreV1Api().read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise ProviderNotReady(
                f"credentialsRef: Secret {namespace}/{name} does not exist; create it",
                reason="CredentialsNotFound",
            ) from None
        if exc.status == 403:
            raise ProviderNotReady(
                f"credentialsRef: the operator may not read Secret {namespace}/{name}; "
                "grant it get on secrets in that namespace",
                reason="CredentialsForbidden",
            ) from None
        raise ProviderNotReady(
            f"credentialsRef: reading Secret {namespace}/{name} failed with HTTP {exc.status}",
            reason="CredentialsUnavailable",
        ) from None
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def patch_status(
    plural: str, namespace: str, name: str, status: Mapping[str, object]
) -> dict[str, Any]:
    """Merge-patch a keyledger resource's status (used where kopf's `patch` is not at
    hand); returns the resource as the API server holds it after the patch."""
    from keyledger.api import GROUP, VERSION  # noqa: PLC0415

    patched = client.CustomObjectsApi().patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        plural,
        name,
        {"status": dict(status)},
        _content_type="application/merge-patch+json",
    )
    return dict(cast(Mapping[str, Any], patched))


def namespace_labels(name: str) -> dict[str, str] | None:
    """A namespace's labels; None if it does not exist."""
    try:
        namespace = client.CoreV1Api().read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    metadata = namespace.metadata
    return dict((metadata.labels if metadata is not None else None) or {})


def read_custom_object(plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """A keyledger resource as the API server holds it; None if it does not exist."""
    from keyledger.api import GROUP, VERSION  # noqa: PLC0415

    api = client.CustomObjectsApi()
    try:
        if namespace is None:
            found = api.get_cluster_custom_object(GROUP, VERSION, plural, name)
        else:
            found = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(cast(Mapping[str, Any], found))

"""The few direct Kubernetes API reads the operator makes besides kopf's watches."""

from __future__ import annotations

import base64
from collections.abc import Mapping

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


def patch_status(plural: str, namespace: str, name: str, status: Mapping[str, object]) -> None:
    """Merge-patch a keyledger resource's status (used where kopf's `patch` is not at hand)."""
    from keyledger.api import GROUP, VERSION  # noqa: PLC0415

    client.CustomObjectsApi().patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        plural,
        name,
        {"status": dict(status)},
        _content_type="application/merge-patch+json",
    )

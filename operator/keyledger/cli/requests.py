"""`kubectl keyledger rotate|rollback|compromise|pause|resume`: ask the operator.

Each request is an annotation whose value is a fresh token, so it happens once;
the command then waits until the operator has recorded that token.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from keyledger.api import (
    COMPROMISE_REASON,
    ENCRYPTION_KEYS,
    GROUP,
    PAUSED,
    VERSION,
)
from keyledger.kube import load_kubernetes_config
from keyledger.lifecycle.plan import RequestKind
from keyledger.lifecycle.requests import ANNOTATIONS


def request_transition(
    kind: RequestKind, name: str, namespace: str, reason: str | None, wait_seconds: float
) -> int:
    load_kubernetes_config()
    api = client.CustomObjectsApi()
    token = f"cli-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"
    annotations = {ANNOTATIONS[kind]: token}
    if reason:
        annotations[COMPROMISE_REASON] = reason
    try:
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            ENCRYPTION_KEYS,
            name,
            {"metadata": {"annotations": annotations}},
            _content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        print(
            f"error: cannot annotate encryptionkey {namespace}/{name}: HTTP {exc.status} "
            f"{exc.reason}"
        )
        return 1
    print(f"{kind.value} requested for {namespace}/{name} (token {token})")
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        body = cast(
            dict[str, Any],
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, ENCRYPTION_KEYS, name),
        )
        status = body.get("status") or {}
        if (status.get("lastHandledRequests") or {}).get(kind.value) == token:
            print(f"done: version {status.get('version')} is {status.get('phase')}")
            return 0
        time.sleep(0.5)
    if wait_seconds:
        print(
            f"not handled within {wait_seconds:.0f} s; see `kubectl describe ek {name} "
            f"-n {namespace}` for events"
        )
        return 2
    return 0


def set_paused(name: str, namespace: str, paused: bool, wait_seconds: float) -> int:
    """Set or remove keyledger.io/paused, then wait for the Paused condition to follow."""
    load_kubernetes_config()
    api = client.CustomObjectsApi()
    try:
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            ENCRYPTION_KEYS,
            name,
            {"metadata": {"annotations": {PAUSED: "true" if paused else None}}},
            _content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        print(
            f"error: cannot annotate encryptionkey {namespace}/{name}: HTTP {exc.status} "
            f"{exc.reason}"
        )
        return 1
    want = "True" if paused else "False"
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        body = cast(
            dict[str, Any],
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, ENCRYPTION_KEYS, name),
        )
        conditions = (body.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Paused" and c.get("status") == want for c in conditions):
            print(
                f"paused: {namespace}/{name} makes no changes until `kubectl keyledger resume`"
                if paused
                else f"resumed: {namespace}/{name}; what waited is carried out now"
            )
            return 0
        time.sleep(0.5)
    if wait_seconds:
        print(f"the operator did not confirm within {wait_seconds:.0f} s; is it running?")
        return 2
    return 0

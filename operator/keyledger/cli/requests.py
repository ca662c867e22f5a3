"""`kubectl keyledger rotate|rollback|compromise|pause|resume`: ask the operator.

Each request is an annotation; a transition's value is a fresh token, so it
happens once. The command then waits until the operator's status shows it done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
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
from keyledger.lifecycle.actions import RequestKind
from keyledger.lifecycle.conditions import PAUSED as PAUSED_CONDITION
from keyledger.lifecycle.requests import ANNOTATIONS

# Reads a key's status; returns what to print once the operator has done the work.
Done = Callable[[Mapping[str, Any]], str | None]


def request_transition(
    kind: RequestKind, name: str, namespace: str, reason: str | None, wait_seconds: float
) -> int:
    token = f"cli-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"
    annotations: dict[str, str | None] = {ANNOTATIONS[kind]: token}
    if reason:
        annotations[COMPROMISE_REASON] = reason

    def done(status: Mapping[str, Any]) -> str | None:
        if (status.get("lastHandledRequests") or {}).get(kind.value) != token:
            return None
        return f"done: version {status.get('version')} is {status.get('phase')}"

    return _annotate_and_wait(
        name,
        namespace,
        annotations,
        f"{kind.value} requested for {namespace}/{name} (token {token})",
        done,
        wait_seconds,
    )


def set_paused(name: str, namespace: str, paused: bool, wait_seconds: float) -> int:
    """Set or remove keyledger.io/paused, then wait for the Paused condition to follow."""
    want = "True" if paused else "False"

    def done(status: Mapping[str, Any]) -> str | None:
        conditions = status.get("conditions") or []
        if not any(
            c.get("type") == PAUSED_CONDITION and c.get("status") == want for c in conditions
        ):
            return None
        if paused:
            return f"paused: {namespace}/{name} makes no changes until `kubectl keyledger resume`"
        return f"resumed: {namespace}/{name}; what waited is carried out now"

    return _annotate_and_wait(
        name, namespace, {PAUSED: "true" if paused else None}, None, done, wait_seconds
    )


def _annotate_and_wait(
    name: str,
    namespace: str,
    annotations: Mapping[str, str | None],
    requested: str | None,
    done: Done,
    wait_seconds: float,
) -> int:
    """Merge-patch `annotations` (None removes one), then poll the status until `done`."""
    load_kubernetes_config()
    api = client.CustomObjectsApi()
    try:
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            ENCRYPTION_KEYS,
            name,
            {"metadata": {"annotations": dict(annotations)}},
            _content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        print(f"error: cannot annotate encryptionkey {namespace}/{name}: {_refusal(exc)}")
        return 1
    if requested:
        print(requested)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        body = cast(
            dict[str, Any],
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, ENCRYPTION_KEYS, name),
        )
        message = done(body.get("status") or {})
        if message:
            print(message)
            return 0
        time.sleep(0.5)
    if wait_seconds:
        print(
            f"the operator did not confirm within {wait_seconds:.0f} s; see `kubectl describe "
            f"ek {name} -n {namespace}` for events, and check that it is running"
        )
        return 2
    return 0


def _refusal(exc: ApiException) -> str:
    """The API server's own message (an admission refusal names the reason and the
    fix), or the HTTP status when there is none."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else f"HTTP {exc.status} {exc.reason}"

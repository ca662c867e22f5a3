"""KeyProvider and ClusterKeyProvider: indexed for keys, checked for Ready."""

from __future__ import annotations

from typing import Any

import kopf

from keyledger.api import CLUSTER_KEY_PROVIDERS, GROUP, KEY_PROVIDERS, VERSION
from keyledger.errors import KeyledgerError
from keyledger.handlers.reporting import write_outcome
from keyledger.handlers.schedule import start_schedule
from keyledger.lifecycle.spec import ProviderKind
from keyledger.metrics import forget_provider, observe_provider
from keyledger.operations.health import check_provider
from keyledger.operations.providers import ProviderView
from keyledger.runtime import Runtime

# How often a provider's connectivity is proven again; also how a fixed
# credentials Secret is noticed without touching the provider.
RECHECK_INTERVAL = 30.0


def _view(kind: ProviderKind, body: kopf.Body) -> ProviderView | None:
    try:
        return ProviderView.from_resource(
            kind, body.metadata.namespace, body.metadata.name, body.spec, body.status
        )
    except KeyledgerError:
        return None


@kopf.index(GROUP, VERSION, CLUSTER_KEY_PROVIDERS)
def cluster_provider_index(body: kopf.Body, name: str, **_: Any) -> dict[str, ProviderView]:
    view = _view(ProviderKind.CLUSTER, body)
    return {name: view} if view else {}


@kopf.index(GROUP, VERSION, KEY_PROVIDERS)
def key_provider_index(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[tuple[str, str], ProviderView]:
    view = _view(ProviderKind.NAMESPACED, body)
    return {(namespace or "", name): view} if view else {}


@kopf.index("", "v1", "namespaces")
def namespace_label_index(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    """Namespace labels, for ClusterKeyProvider namespaceSelectors."""
    return {name: dict(labels)}


@kopf.on.resume(GROUP, VERSION, CLUSTER_KEY_PROVIDERS)
@kopf.on.create(GROUP, VERSION, CLUSTER_KEY_PROVIDERS)
@kopf.on.update(GROUP, VERSION, CLUSTER_KEY_PROVIDERS, field="spec")
@kopf.timer(GROUP, VERSION, CLUSTER_KEY_PROVIDERS, interval=RECHECK_INTERVAL, idle=5)
def check_cluster_provider(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    outcome = check_provider(ProviderKind.CLUSTER, body, runtime.backends, runtime.keys)
    written = write_outcome(outcome, body, patch.status.update)
    observe_provider(
        ProviderKind.CLUSTER.value, None, body.metadata.name or "", {**body.status, **written}
    )


@kopf.on.resume(GROUP, VERSION, KEY_PROVIDERS)
@kopf.on.create(GROUP, VERSION, KEY_PROVIDERS)
@kopf.on.update(GROUP, VERSION, KEY_PROVIDERS, field="spec")
@kopf.timer(GROUP, VERSION, KEY_PROVIDERS, interval=RECHECK_INTERVAL, idle=5)
def check_key_provider(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    outcome = check_provider(ProviderKind.NAMESPACED, body, runtime.backends, runtime.keys)
    written = write_outcome(outcome, body, patch.status.update)
    observe_provider(
        ProviderKind.NAMESPACED.value,
        body.metadata.namespace,
        body.metadata.name or "",
        {**body.status, **written},
    )


@kopf.on.delete(GROUP, VERSION, CLUSTER_KEY_PROVIDERS, optional=True)
def forget_cluster_provider(body: kopf.Body, **_: Any) -> None:
    forget_provider(ProviderKind.CLUSTER.value, None, body.metadata.name or "")


@kopf.on.delete(GROUP, VERSION, KEY_PROVIDERS, optional=True)
def forget_key_provider(body: kopf.Body, **_: Any) -> None:
    forget_provider(
        ProviderKind.NAMESPACED.value, body.metadata.namespace, body.metadata.name or ""
    )


@kopf.daemon(GROUP, VERSION, CLUSTER_KEY_PROVIDERS)
@kopf.daemon(GROUP, VERSION, KEY_PROVIDERS)
async def hold_schedule(uid: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """Lets the schedule board run passes while this daemon runs.

    kopf stops every daemon when peering pauses the replica (and whenever it exits)
    and starts them again on resume; a key has no pass without its provider, so the
    providers' daemons are what says this replica acts."""
    runtime: Runtime = memo.runtime
    start_schedule(runtime, memo)
    runtime.hold(uid)
    try:
        await stopped.wait()
    finally:
        runtime.board.release(uid)

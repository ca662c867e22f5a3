"""Operator start-up and shutdown: kopf settings and the shared runtime."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from keyledger.admission.certificates import serving_certificate
from keyledger.api import FINALIZER, KOPF_ANNOTATION_PREFIX
from keyledger.heap import release_free_pages
from keyledger.kube import load_kubernetes_config, read_secret
from keyledger.logsafety import cap_sdk_logging
from keyledger.runtime import build_runtime
from keyledger.serving import ReadinessGate, serve
from keyledger.settings import Settings, get_settings

HEAP_TRIM_INTERVAL_S = 60.0


@kopf.on.startup()
def start_operator(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Events are posted explicitly with domain reasons; only warnings from logs join them.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    cap_sdk_logging()
    load_kubernetes_config()
    config = get_settings()
    # Passes at once (KEYLEDGER_HANDLER_THREADS, at most 24): the ledger pool's 10 + 20
    # connections serve each of them and the schedule's own passes.
    settings.execution.max_workers = config.handler_threads
    if config.peering:
        # One ClusterKopfPeering for all replicas, whatever namespaces they serve.
        settings.peering.clusterwide = True
        settings.peering.lifetime = config.peering_lifetime
        settings.peering.stealth = True
    gate = ReadinessGate()
    if config.metrics_port:
        serve(config.metrics_port, gate)
    if config.webhook_port:
        _serve_admission_webhooks(settings, config)
    memo.runtime = build_runtime(config, read_secret)
    gate.arm(memo.runtime.ledger_ready)
    memo.operator_settings = settings  # for loggers outside handlers (the schedule task)


def _serve_admission_webhooks(settings: kopf.OperatorSettings, config: Settings) -> None:
    tls = serving_certificate(config.webhook_certificates_dir(), [config.webhook_host])
    settings.admission.server = kopf.WebhookServer(
        addr=config.webhook_listen,
        port=config.webhook_port,
        host=config.webhook_host,
        certfile=tls.certfile,
        pkeyfile=tls.keyfile,
        cafile=tls.cafile,
    )
    # kopf keeps the webhook configurations pointed at this server and its CA; with
    # none named they come from manifests (e.g. with cert-manager's CA injector).
    settings.admission.managed = config.webhook_configuration or None


@kopf.on.startup()
async def trim_heap_periodically(memo: kopf.Memo, **_: Any) -> None:
    """Hand back to the OS, every minute, the pages a burst of work freed."""

    async def trim() -> None:
        while True:
            await asyncio.sleep(HEAP_TRIM_INTERVAL_S)
            await asyncio.to_thread(release_free_pages)

    memo.heap_trimmer = asyncio.create_task(trim(), name="keyledger heap trim")


@kopf.on.cleanup()
def stop_operator(memo: kopf.Memo, **_: Any) -> None:
    trimmer = getattr(memo, "heap_trimmer", None)
    if trimmer is not None:
        trimmer.get_loop().call_soon_threadsafe(trimmer.cancel)
    runtime = getattr(memo, "runtime", None)
    if runtime is not None:
        runtime.close()

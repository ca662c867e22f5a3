"""The operator's HTTP port for Prometheus and the kubelet: /metrics and /readyz.

Liveness stays with kopf (`keyledger run --liveness=...`), which answers from the
operator's event loop. Readiness is ours: ready once start-up has armed the gate
with a check (the runtime's: the ledger answers) and while that check passes, so
a rolling update waits for a new replica that can actually work.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

# Says why the operator is not ready, or None when it is.
ReadinessCheck = Callable[[], str | None]

READY_PATH = "/readyz"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would drown the operator's own log."""


class ReadinessGate:
    """Not ready until `arm` gives it a check; then ready while the check passes."""

    def __init__(self) -> None:
        self._check: ReadinessCheck | None = None

    def arm(self, check: ReadinessCheck) -> None:
        self._check = check

    def why_not_ready(self) -> str | None:
        if self._check is None:
            return "starting: the ledger and backends are not set up yet"
        return self._check()


def serve(port: int, gate: ReadinessGate, host: str = "0.0.0.0") -> WSGIServer:  # noqa: S104
    """Start serving /metrics and /readyz in a daemon thread; returns the server."""
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == READY_PATH:
            reason = gate.why_not_ready()
            status = "200 OK" if reason is None else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{reason or 'ready'}\n".encode()]
        result: Iterable[bytes] = metrics(environ, start_response)
        return result

    server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-readyz", daemon=True).start()
    return server

"""An HTTP reverse proxy that injects KMS faults: throttling, server errors, lost
replies and latency, on a chosen share of the calls, from a seeded random source.

It sits between the operator and a real test server (moto's AWS KMS, OpenBao) and
answers as that service does when it is overloaded or failing:

- `throttle`: AWS `ThrottlingException` (HTTP 400, JSON body, as AWS sends it);
  Vault HTTP 429 with its `errors` list;
- `error`: AWS `KMSInternalException` (HTTP 500); Vault HTTP 503;
- `lost_reply`: the call *is* forwarded and done upstream, then the caller gets the
  `error` answer instead of the reply, as when a connection drops after the server
  acted (the case idempotency markers exist for);
- `latency`: the call is delayed, then forwarded;
- `pass`: the call is forwarded untouched (to exempt calls from later rules).

Rules are tried in order: each whose `match` accepts the call fires with
probability `share`, and the first that fires decides. Counts of forwarded and
faulted calls are kept per operation (the AWS `X-Amz-Target` action, or the
Vault method and path).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

FaultKind = Literal["throttle", "error", "lost_reply", "latency", "pass"]
Dialect = Literal["aws", "vault"]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass(frozen=True)
class Call:
    """What a rule sees of a call: the operation, and the raw request to match on."""

    operation: str  # "CreateKey" for AWS, "POST /v1/kms/transit/keys/x" for Vault
    method: str
    path: str
    body: bytes

    def mentions(self, text: str) -> bool:
        return text in self.path or text.encode() in self.body


@dataclass(frozen=True)
class FaultRule:
    kind: FaultKind
    share: float
    match: Callable[[Call], bool] = lambda call: True
    latency_s: float = 0.0


class FaultProxy:
    """A threaded reverse proxy on 127.0.0.1; `url` replaces the upstream's address."""

    def __init__(self, upstream: str, dialect: Dialect, seed: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        assert parsed.scheme == "http" and parsed.hostname and parsed.port, upstream
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.dialect = dialect
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self.forwarded: Counter[str] = Counter()
        self.faulted: Counter[tuple[str, FaultKind]] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_rules(self, *rules: FaultRule) -> None:
        with self._lock:
            self._rules = list(rules)

    def faults(self, kind: FaultKind | None = None) -> int:
        with self._lock:
            return sum(n for (_, k), n in self.faulted.items() if kind is None or k == kind)

    # -- internals ----------------------------------------------------------------

    def _decide(self, call: Call) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.match(call) and self._random.random() < rule.share:
                    return None if rule.kind == "pass" else rule
        return None

    def _operation(self, method: str, path: str, headers: dict[str, str]) -> str:
        if self.dialect == "aws":
            target = headers.get("x-amz-target", "")
            return target.rpartition(".")[2] or f"{method} {path}"
        return f"{method} {urllib.parse.urlsplit(path).path}"

    def _fault_reply(self, kind: FaultKind) -> tuple[int, dict[str, str], bytes]:
        if self.dialect == "aws":
            content = {"Content-Type": "application/x-amz-json-1.1"}
            if kind == "throttle":
                body = {"__type": "ThrottlingException", "message": "Rate exceeded"}
                return 400, content, json.dumps(body).encode()
            body = {"__type": "KMSInternalException", "message": "injected internal failure"}
            return 500, content, json.dumps(body).encode()
        content = {"Content-Type": "application/json"}
        if kind == "throttle":
            body_v = {"errors": ["request path: rate limit quota exceeded"]}
            return 429, content, json.dumps(body_v).encode()
        body_v = {"errors": ["Vault is sealed"]}
        return 503, content, json.dumps(body_v).encode()

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            # Host is kept as the caller sent it: AWS signatures cover it.
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(method, path, body=body or None, headers=sent)
            reply = connection.getresponse()
            data = reply.read()
            kept = [(k, v) for k, v in reply.getheaders() if k.lower() not in _HOP_BY_HOP]
            return reply.status, kept, data
        finally:
            connection.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the counters say what happened

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()}
                lowered = {k.lower(): v for k, v in headers.items()}
                operation = proxy._operation(self.command, self.path, lowered)
                call = Call(operation, self.command, self.path, body)
                rule = proxy._decide(call)
                if rule is not None:
                    with proxy._lock:
                        proxy.faulted[(operation, rule.kind)] += 1
                if rule is not None and rule.kind == "latency":
                    time.sleep(rule.latency_s)
                if rule is not None and rule.kind in ("throttle", "error"):
                    status, fault_headers, data = proxy._fault_reply(rule.kind)
                    self._reply(status, list(fault_headers.items()), data)
                    return
                try:
                    status, reply_headers, data = proxy._forward(
                        self.command, self.path, headers, body
                    )
                except OSError:
                    self._reply(502, [("Content-Type", "text/plain")], b"upstream unreachable")
                    return
                with proxy._lock:
                    proxy.forwarded[operation] += 1
                if rule is not None and rule.kind == "lost_reply":
                    status, fault_headers, data = proxy._fault_reply("error")
                    self._reply(status, list(fault_headers.items()), data)
                    return
                self._reply(status, reply_headers, data)

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            # http.server dispatches on these names; LIST is Vault's own verb.
            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_LIST = _serve  # noqa: N815

        return Handler

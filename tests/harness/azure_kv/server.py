"""The Key Vault test server on the wire: HTTPS, the bearer challenge, Entra's
discovery and token endpoints, and the keys routes of `routes.ROUTES` over `vault.Vault`.

Request bodies are JSON as the SDK sends them; a body field the server does not
implement is refused (400 BadParameter) rather than ignored, so keyledger
cannot come to rely on something nothing here checks.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from tests.harness.azure_kv.entra import Entra
from tests.harness.azure_kv.routes import API_VERSION, Route, find_route
from tests.harness.azure_kv.vault import (
    RECOVERABLE_DAYS,
    Attributes,
    Key,
    KeyVersion,
    Vault,
    VaultFault,
)

log = logging.getLogger(__name__)

DEFAULT_PAGE = 25
SKIP_TOKEN = "$skiptoken"
# The JSON body fields each operation reads; anything else is refused.
BODY_FIELDS: Mapping[str, frozenset[str]] = {
    "create_key": frozenset({"kty", "key_size", "key_ops", "attributes", "tags"}),
    "update_key": frozenset({"key_ops", "attributes", "tags"}),
    "wrap_key": frozenset({"alg", "value"}),
    "unwrap_key": frozenset({"alg", "value"}),
}
ATTRIBUTE_FIELDS = frozenset({"enabled", "nbf", "exp"})

Answer = tuple[int, dict[str, Any] | None]


class KeyVaultService:
    def __init__(self, vault_url: str, entra: Entra, vault: Vault | None = None) -> None:
        self.vault_url = vault_url
        self.entra = entra
        self.vault = vault or Vault()

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        """One request: its status, extra headers, JSON answer."""
        parts = urlsplit(target)
        path = unquote(parts.path)
        entra = self._entra(method, path, body)
        if entra is not None:
            return entra[0], {}, entra[1]
        found = find_route(method, path)
        if found is None:
            return 404, {}, _fault(VaultFault(404, "NotFound", f"No route {method} {path}."))
        route, values = found
        # The bearer challenge comes first: the SDK's first request carries no token or body.
        if not self.entra.accepts(headers.get("authorization")):
            fault = VaultFault(401, "Unauthorized", "AKV10000: Request is missing a Bearer token.")
            return 401, {"WWW-Authenticate": self.entra.challenge()}, _fault(fault)
        try:
            query = _query(route, parts.query)
            payload = _body(route, body)
            with self.vault.locked():
                status, answer = self._operation(route.operation)(values, query, payload)
        except VaultFault as fault:
            return fault.status, {}, _fault(fault)
        return status, {}, answer

    # -- operations ------------------------------------------------------------------

    def _operation(
        self, name: str
    ) -> Callable[[dict[str, str], dict[str, str], dict[str, Any]], Answer]:
        operation: Callable[[dict[str, str], dict[str, str], dict[str, Any]], Answer] = getattr(
            self, f"_{name}"
        )
        return operation

    def _list_keys(self, _: dict[str, str], query: dict[str, str], __: dict[str, Any]) -> Answer:
        keys = self.vault.keys()
        return 200, self._page(
            "/keys", query, [self._key_item(k.current, versioned=False) for k in keys]
        )

    def _create_key(self, path: dict[str, str], _: dict[str, str], body: dict[str, Any]) -> Answer:
        version = self.vault.create(
            path["key-name"],
            str(body.get("kty", "")),
            body.get("key_size"),
            body.get("key_ops"),
            _attributes(body.get("attributes")),
            body.get("tags") or {},
        )
        return 200, self._bundle(version)

    def _list_key_versions(
        self, path: dict[str, str], query: dict[str, str], _: dict[str, Any]
    ) -> Answer:
        key = self.vault.key(path["key-name"])
        items = [self._key_item(v, versioned=True) for v in key.versions]
        return 200, self._page(f"/keys/{key.name}/versions", query, items)

    def _get_key(self, path: dict[str, str], _: dict[str, str], __: dict[str, Any]) -> Answer:
        return 200, self._bundle(self.vault.version(path["key-name"], path["key-version"]))

    def _update_key(self, path: dict[str, str], _: dict[str, str], body: dict[str, Any]) -> Answer:
        version = self.vault.update(
            path["key-name"],
            path["key-version"],
            _attributes(body.get("attributes")),
            body.get("tags"),
            body.get("key_ops"),
        )
        return 200, self._bundle(version)

    def _wrap_key(self, path: dict[str, str], _: dict[str, str], body: dict[str, Any]) -> Answer:
        name, version = path["key-name"], path["key-version"]
        wrapped = self.vault.wrap_key(name, version, str(body.get("alg")), _b64(body.get("value")))
        kid = self._kid(self.vault.version(name, version))
        return 200, {"kid": kid, "value": _b64url(wrapped)}

    def _unwrap_key(self, path: dict[str, str], _: dict[str, str], body: dict[str, Any]) -> Answer:
        name, version = path["key-name"], path["key-version"]
        plain = self.vault.unwrap_key(name, version, str(body.get("alg")), _b64(body.get("value")))
        kid = self._kid(self.vault.version(name, version))
        return 200, {"kid": kid, "value": _b64url(plain)}

    def _delete_key(self, path: dict[str, str], _: dict[str, str], __: dict[str, Any]) -> Answer:
        return 200, self._deleted_bundle(self.vault.delete(path["key-name"]))

    def _get_deleted_key(
        self, path: dict[str, str], _: dict[str, str], __: dict[str, Any]
    ) -> Answer:
        return 200, self._deleted_bundle(self.vault.deleted(path["key-name"]))

    def _recover_deleted_key(
        self, path: dict[str, str], _: dict[str, str], __: dict[str, Any]
    ) -> Answer:
        return 200, self._bundle(self.vault.recover(path["key-name"]).current)

    def _purge_deleted_key(
        self, path: dict[str, str], _: dict[str, str], __: dict[str, Any]
    ) -> Answer:
        self.vault.purge(path["key-name"])
        return 204, None

    # -- Entra -----------------------------------------------------------------------

    def _entra(self, method: str, path: str, body: bytes) -> Answer | None:
        segments = path.strip("/").split("/")
        if method == "GET" and segments[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self.entra.openid_configuration(segments[0])
        if method == "POST" and segments[1:] == ["oauth2", "v2.0", "token"]:
            form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
            return self.entra.token(segments[0], form)
        return None

    # -- JSON ------------------------------------------------------------------------

    def _kid(self, version: KeyVersion) -> str:
        return f"{self.vault_url}/keys/{version.name}/{version.version}"

    def _bundle(self, version: KeyVersion) -> dict[str, Any]:
        numbers = version.private_key.public_key().public_numbers()
        return {
            "key": {
                "kid": self._kid(version),
                "kty": "RSA",
                "key_ops": version.key_ops,
                "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                "e": _b64url(numbers.e.to_bytes(3, "big")),
            },
            "attributes": _attributes_json(version),
            "tags": version.tags,
        }

    def _key_item(self, version: KeyVersion, *, versioned: bool) -> dict[str, Any]:
        kid = self._kid(version) if versioned else f"{self.vault_url}/keys/{version.name}"
        return {"kid": kid, "attributes": _attributes_json(version), "tags": version.tags}

    def _deleted_bundle(self, key: Key) -> dict[str, Any]:
        assert key.deleted is not None
        return {
            **self._bundle(key.current),
            "recoveryId": f"{self.vault_url}/deletedkeys/{key.name}",
            "deletedDate": _epoch(key.deleted),
            "scheduledPurgeDate": _epoch(key.deleted + timedelta(days=RECOVERABLE_DAYS)),
        }

    def _page(
        self, path: str, query: dict[str, str], items: list[dict[str, Any]]
    ) -> dict[str, Any]:
        size = _int(query.get("maxresults"), DEFAULT_PAGE, "maxresults")
        if not 1 <= size <= DEFAULT_PAGE:
            raise VaultFault(400, "BadParameter", f"maxresults must be 1 to {DEFAULT_PAGE}.")
        start = _int(query.get(SKIP_TOKEN), 0, SKIP_TOKEN)
        end = start + size
        next_link = None
        if end < len(items):
            params = {"api-version": API_VERSION, "maxresults": size, SKIP_TOKEN: end}
            next_link = f"{self.vault_url}{path}?{urlencode(params)}"
        return {"value": items[start:end], "nextLink": next_link}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service: KeyVaultService  # set on the subclass made by `serve`

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, extra, answer = self.service.handle(self.command, self.path, headers, body)
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            status, extra, answer = 500, {}, _fault(VaultFault(500, "InternalError", "failed"))
        data = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        if answer is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s " + format, self.address_string(), *args)


def serve(
    entra_settings: tuple[str, str, str], cert_file: Path, key_file: Path
) -> tuple[ThreadingHTTPServer, int]:
    """An HTTPS server on 127.0.0.1 and a kernel-chosen port; (tenant, client, secret) is
    the one service principal Entra knows. Returns the server (not yet serving) and its port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port: int = httpd.server_address[1]
    base = f"https://127.0.0.1:{port}"
    tenant, client, secret = entra_settings
    service = KeyVaultService(base, Entra(base, tenant, client, secret))
    httpd.RequestHandlerClass = type("Handler", (_Handler,), {"service": service})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    return httpd, port


def _query(route: Route, text: str) -> dict[str, str]:
    query = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
    unknown = set(query) - route.query - {SKIP_TOKEN}
    if unknown:
        raise VaultFault(400, "BadParameter", f"Unknown query parameters: {sorted(unknown)}.")
    if query.get("api-version") != API_VERSION:
        raise VaultFault(
            400,
            "BadParameter",
            f"The specified version ({query.get('api-version')}) is not recognized by this test "
            f"vault. Use {API_VERSION}.",
        )
    return query


def _body(route: Route, raw: bytes) -> dict[str, Any]:
    allowed = BODY_FIELDS.get(route.operation, frozenset())
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise VaultFault(400, "BadParameter", "The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise VaultFault(400, "BadParameter", "The request body must be a JSON object.")
    unknown = set(body) - allowed
    unknown |= set(body.get("attributes") or {}) - ATTRIBUTE_FIELDS
    if unknown:
        raise VaultFault(
            400, "BadParameter", f"This test vault does not implement {sorted(unknown)}."
        )
    return body


def _attributes(value: object) -> Attributes:
    data = value if isinstance(value, dict) else {}
    enabled = data.get("enabled")
    return Attributes(
        enabled=enabled if isinstance(enabled, bool) else None,
        not_before=_from_epoch(data.get("nbf")),
        expires=_from_epoch(data.get("exp")),
    )


def _attributes_json(version: KeyVersion) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "enabled": version.enabled,
        "created": _epoch(version.created),
        "updated": _epoch(version.updated),
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": RECOVERABLE_DAYS,
    }
    if version.not_before is not None:
        attributes["nbf"] = _epoch(version.not_before)
    if version.expires is not None:
        attributes["exp"] = _epoch(version.expires)
    return attributes


def _fault(fault: VaultFault) -> dict[str, Any]:
    error: dict[str, Any] = {"code": fault.code, "message": fault.message}
    if fault.inner:
        error["innererror"] = {"code": fault.inner}
    return {"error": error}


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _from_epoch(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _int(value: str | None, default: int, name: str) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise VaultFault(400, "BadParameter", f"{name} must be a number.")
    return int(value)


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise VaultFault(400, "BadParameter", "value must be base64url text.")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise VaultFault(400, "BadParameter", "value must be base64url text.") from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

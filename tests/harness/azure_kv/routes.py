"""The Key Vault REST routes the test server answers, and nothing else.

Each route is a method, a path template in the SDK's own spelling
(`{key-name}`, `{key-version}`) and the query parameters it reads. The server
dispatches from this table only, and `tests/conformance/test_azure_key_vault_routes.py`
checks every entry against the request builders generated into
azure-keyvault-keys (`build_key_vault_*_request`): a route, method or query
parameter they do not produce fails there. `$skiptoken` is not listed: it only
appears in the `nextLink` URLs the server itself hands out, which the SDK
follows as given.

The Entra ID endpoints the server also answers (OpenID discovery, token) are
not Key Vault routes; they are in `entra.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The api-version the server accepts: the SDK's default.
API_VERSION = "2025-07-01"


@dataclass(frozen=True)
class Route:
    operation: str  # the handler, and what the route is called in errors and logs
    method: str
    template: str
    query: frozenset[str] = frozenset({"api-version"})

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        found = _pattern(self.template).fullmatch(path)
        return (
            None
            if found is None
            else {k.replace("_", "-"): v for k, v in found.groupdict().items()}
        )


_PAGED = frozenset({"api-version", "maxresults"})

# Literal segments first: /keys/{key-name}/versions before /keys/{key-name}/{key-version}.
ROUTES = (
    Route("list_keys", "GET", "/keys", _PAGED),
    Route("create_key", "POST", "/keys/{key-name}/create"),
    Route("list_key_versions", "GET", "/keys/{key-name}/versions", _PAGED),
    Route("get_key", "GET", "/keys/{key-name}/{key-version}"),
    Route("update_key", "PATCH", "/keys/{key-name}/{key-version}"),
    Route("wrap_key", "POST", "/keys/{key-name}/{key-version}/wrapkey"),
    Route("unwrap_key", "POST", "/keys/{key-name}/{key-version}/unwrapkey"),
    Route("delete_key", "DELETE", "/keys/{key-name}"),
    Route("get_deleted_key", "GET", "/deletedkeys/{key-name}"),
    Route("recover_deleted_key", "POST", "/deletedkeys/{key-name}/recover"),
    Route("purge_deleted_key", "DELETE", "/deletedkeys/{key-name}"),
)


def find_route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        values = route.match(method, path)
        if values is not None:
            return route, values
    return None


def _pattern(template: str) -> re.Pattern[str]:
    # A version may be empty: the SDK asks for a key's current version as /keys/{name}/.
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{key-name}"), "(?P<key_name>[^/]+)")
    pattern = pattern.replace(re.escape("{key-version}"), "(?P<key_version>[^/]*)")
    return re.compile(pattern)

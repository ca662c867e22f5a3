"""Are the Key Vault test server's routes in the SDK's generated request builders?

azure-keyvault-keys is generated from Key Vault's published REST specification;
its `build_key_vault_*_request` functions are that specification in a form a
test can run. Each builder is called with placeholder path arguments and every
keyword-only (query) argument set, and the request it builds gives a method, a
path template and the query parameters. `route_problems` reports every server
route (`tests.harness.azure_kv.routes.ROUTES`, the table the server dispatches
from) whose method and path no builder produces, or that reads a query
parameter its builder does not send, and an api-version other than the builders'.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from azure.keyvault.keys._generated._operations import _operations as generated

from tests.harness.azure_kv.routes import Route

_PLACEHOLDERS = {"key_name": "{key-name}", "key_version": "{key-version}"}


@dataclass(frozen=True)
class BuiltRequest:
    builder: str
    method: str
    template: str
    query: frozenset[str]
    api_version: str


def sdk_requests() -> list[BuiltRequest]:
    """What every generated Key Vault request builder builds."""
    built = []
    for name, builder in sorted(vars(generated).items()):
        if not (name.startswith("build_key_vault_") and name.endswith("_request")):
            continue
        parameters = inspect.signature(builder).parameters.values()
        path = {
            p.name: f"PLACEHOLDER-{p.name}" for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD
        }
        unknown = set(path) - set(_PLACEHOLDERS)
        if unknown:
            raise AssertionError(f"{name} takes path arguments this check does not know: {unknown}")
        query_args = {p.name: 1 for p in parameters if p.kind is p.KEYWORD_ONLY}
        request = builder(**path, **query_args)
        url = urlsplit(request.url)
        template = unquote(url.path)
        for argument, value in path.items():
            template = template.replace(value, _PLACEHOLDERS[argument])
        query = parse_qs(url.query)
        built.append(
            BuiltRequest(name, request.method, template, frozenset(query), query["api-version"][0])
        )
    return built


def route_problems(
    routes: Iterable[Route], api_version: str, built: list[BuiltRequest]
) -> list[str]:
    problems = []
    versions = {b.api_version for b in built}
    if versions != {api_version}:
        problems.append(f"the server accepts api-version {api_version}, the SDK sends {versions}")
    by_shape = {(b.method, b.template): b for b in built}
    for route in routes:
        match = by_shape.get((route.method, route.template))
        if match is None:
            problems.append(
                f"route {route.operation} ({route.method} {route.template}) is built by no "
                "build_key_vault_*_request"
            )
            continue
        extra = route.query - match.query
        if extra:
            problems.append(
                f"route {route.operation} reads query parameters {sorted(extra)} that "
                f"{match.builder} does not send"
            )
    return problems

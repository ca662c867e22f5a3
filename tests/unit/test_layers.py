"""The layers STYLE.md asks for, checked on the import graph: kopf only in the
handlers (and the commands that start kopf), no SDK or SQL in the pure lifecycle,
no kopf in providers, store or client; and for each top-level module of the
package, what it may not import.

Every subpackage and every top-level module needs a rule here: a new one fails
until someone decides its bounds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "keyledger"

CLUSTER = ("kopf", "kubernetes")
SQL = ("sqlalchemy", "alembic", "psycopg")
SDKS = ("boto3", "botocore", "hvac", "pkcs11", "google", "azure")
# Everything a module needs a reason to load; the vocabulary modules load none of it.
FRAMEWORKS = (*CLUSTER, *SQL, *SDKS, "prometheus_client", "pydantic", "pydantic_settings")
LIFECYCLE = "keyledger.lifecycle"
PROVIDERS = "keyledger.providers"
STORE = "keyledger.store"
OPERATIONS = "keyledger.operations"
RUNTIME = "keyledger.runtime"
HANDLERS = "keyledger.handlers"
MAIN = "keyledger.main"
CLIENT = "keyledger.client"
CLI = "keyledger.cli"
# Everything above the pure lifecycle.
ABOVE_LIFECYCLE = (PROVIDERS, STORE, OPERATIONS, RUNTIME, HANDLERS, MAIN, CLIENT, CLI)

SUBPACKAGES = {
    "lifecycle": (*FRAMEWORKS, *ABOVE_LIFECYCLE),
    "providers": (*CLUSTER, STORE, OPERATIONS, RUNTIME, HANDLERS, MAIN, CLIENT, CLI),
    "store": (*CLUSTER, *SDKS, PROVIDERS, OPERATIONS, RUNTIME, HANDLERS, MAIN, CLIENT, CLI),
    "client": (*CLUSTER, OPERATIONS, RUNTIME, HANDLERS, MAIN, CLI),
    "operations": ("kopf", HANDLERS, MAIN, CLI),
    # No SDK call or SQL in a handler: they delegate to operations/.
    "handlers": (*SDKS, *SQL, PROVIDERS, STORE, MAIN, CLIENT, CLI),
    # The webhooks' rules and certificate: no kopf, cluster calls or ledger; the
    # handlers do the lookups and hand them the results.
    "admission": (*CLUSTER, *SQL, *SDKS, STORE, RUNTIME, HANDLERS, MAIN, CLIENT, CLI),
    # `keyledger run` starts kopf, which loads keyledger.main; the CLI never loads handlers.
    "cli": (*SDKS, PROVIDERS, HANDLERS, MAIN),
}

MODULES = {
    # Imported by every user of the client library: loads nothing.
    "__init__": (*FRAMEWORKS, "keyledger"),
    # The vocabulary (API names, domain enums, error types, log caps): imported
    # by every layer, imports none. Errors become kopf's in handlers/errors.py.
    "api": (*FRAMEWORKS, "keyledger"),
    "domain": (*FRAMEWORKS, "keyledger"),
    "errors": (*FRAMEWORKS, "keyledger"),
    "logsafety": (*FRAMEWORKS, "keyledger"),
    # Read by every layer, so it leans on the pure lifecycle at most.
    "settings": (*CLUSTER, *SQL, *SDKS, "prometheus_client", *ABOVE_LIFECYCLE),
    "failpoints": (*CLUSTER, *SQL, *SDKS, "prometheus_client", LIFECYCLE, *ABOVE_LIFECYCLE),
    # The one top-level module that talks to the Kubernetes API.
    "kube": ("kopf", *SQL, *SDKS, "prometheus_client", LIFECYCLE, *ABOVE_LIFECYCLE),
    # KMS call metrics wrap a KeyBackend; they know nothing of the ledger or the cluster.
    "metrics": (*CLUSTER, *SQL, *SDKS, STORE, OPERATIONS, RUNTIME, HANDLERS, MAIN, CLIENT, CLI),
    # /metrics and /readyz over HTTP; the readiness check is handed in.
    "serving": (*CLUSTER, *SQL, *SDKS, "pydantic", "pydantic_settings", "keyledger"),
    # Gauges from the status the operator writes.
    "key_metrics": (*CLUSTER, *SQL, *SDKS, *ABOVE_LIFECYCLE),
    # The operator's C heap (glibc arenas and trimming); ctypes only.
    "heap": (*FRAMEWORKS, "keyledger"),
    # The in-memory schedule of due keys the handlers' timers share.
    "board": (*FRAMEWORKS, *ABOVE_LIFECYCLE),
    # The compliance report, built from ledger rows and the audit chains' verdicts
    # (store.audit's types); the CLI reads the ledger and renders it.
    "compliance": (
        *CLUSTER,
        *SQL,
        *SDKS,
        "prometheus_client",
        PROVIDERS,
        OPERATIONS,
        RUNTIME,
        HANDLERS,
        MAIN,
        CLIENT,
        CLI,
    ),
    # Wires settings, ledger and operations; the cluster side is handed in by the handlers.
    "runtime": (*CLUSTER, *SQL, *SDKS, "prometheus_client", HANDLERS, MAIN, CLIENT, CLI),
    # What `kopf run -m keyledger.main` loads: the handlers, nothing beside them.
    "main": (
        "kubernetes",
        *SQL,
        *SDKS,
        "prometheus_client",
        LIFECYCLE,
        PROVIDERS,
        STORE,
        OPERATIONS,
        RUNTIME,
        CLIENT,
        CLI,
    ),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _crossings(modules: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module.relative_to(PACKAGE)} imports {name}"
        for module in modules
        for name in sorted(_imports(module))
        if any(name == bad or name.startswith(bad + ".") for bad in forbidden)
    ]


@pytest.mark.parametrize("layer", sorted(SUBPACKAGES))
def test_layer_imports_stay_inside_their_bounds(layer: str) -> None:
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules, f"no modules under {layer}/"
    crossings = _crossings(modules, SUBPACKAGES[layer])
    assert not crossings, "\n".join(crossings)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_top_level_module_imports_stay_inside_their_bounds(module: str) -> None:
    path = PACKAGE / f"{module}.py"
    assert path.is_file(), f"no module {module}.py: drop its rule"
    crossings = _crossings([path], MODULES[module])
    assert not crossings, "\n".join(crossings)


def test_every_subpackage_and_top_level_module_has_a_rule() -> None:
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert subpackages - SUBPACKAGES.keys() == set(), "add the new subpackage to SUBPACKAGES"
    assert modules - MODULES.keys() == set(), "add the new module to MODULES"

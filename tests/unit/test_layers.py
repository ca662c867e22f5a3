"""The layers STYLE.md asks for, checked on the import graph: kopf only in the
handlers, no SDK or SQL in the pure lifecycle, no kopf in providers, store or client."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "keyledger"

FORBIDDEN = {
    "lifecycle": (
        "kopf",
        "kubernetes",
        "sqlalchemy",
        "boto3",
        "botocore",
        "hvac",
        "pkcs11",
        "google",
        "azure",
        "keyledger.store",
        "keyledger.providers",
        "keyledger.operations",
        "keyledger.handlers",
        "keyledger.client",
    ),
    "providers": (
        "kopf",
        "kubernetes",
        "keyledger.store",
        "keyledger.operations",
        "keyledger.handlers",
    ),
    "store": (
        "kopf",
        "kubernetes",
        "keyledger.providers",
        "keyledger.operations",
        "keyledger.handlers",
    ),
    "client": ("kopf", "kubernetes", "keyledger.operations", "keyledger.handlers"),
    "operations": ("kopf", "keyledger.handlers"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_stay_inside_their_bounds(layer: str) -> None:
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules, f"no modules under {layer}/"
    crossings = [
        f"{module.relative_to(PACKAGE)} imports {name}"
        for module in modules
        for name in sorted(_imports(module))
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer])
    ]
    assert not crossings, "\n".join(crossings)

"""The registry is the one list of backends, and every backend package has the same shape."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from keyledger import providers
from keyledger.domain import KmsProvider
from keyledger.providers import registry
from keyledger.providers.registry import (
    BACKEND_FIELDS,
    BACKENDS,
    BuiltinBackend,
    builtin_backend,
    kms_provider_of,
)
from keyledger.providers.sanitize import sanitize

PROVIDERS_DIR = Path(providers.__file__).parent
# The same file for the same job in every backend (STYLE.md, "Shape").
SHAPE = {"__init__.py", "backend.py", "config.py", "errors.py", "names.py"}


def test_every_backend_package_is_registered() -> None:
    packages = {path.parent.name for path in PROVIDERS_DIR.glob("*/__init__.py")}
    assert packages == {backend.package for backend in BACKENDS}


def test_names_and_ledger_values_are_unique() -> None:
    assert len(set(BACKEND_FIELDS)) == len(BACKENDS)
    assert len({backend.package for backend in BACKENDS}) == len(BACKENDS)
    assert sorted(backend.kms_provider for backend in BACKENDS) == sorted(KmsProvider)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda backend: backend.field)
def test_backend_package_has_the_fixed_shape(backend: BuiltinBackend) -> None:
    files = {path.name for path in (PROVIDERS_DIR / backend.package).glob("*.py")}
    assert files >= SHAPE
    package = f"keyledger.providers.{backend.package}"
    errors = importlib.import_module(f"{package}.errors")
    config = importlib.import_module(f"{package}.config")
    assert inspect.isfunction(errors.translate_error)
    assert errors.sanitize is sanitize  # the one shared sanitizer, not a copy
    assert inspect.isfunction(config.read_options)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda backend: backend.field)
def test_backend_module_registers_its_factory_and_ledger_value(backend: BuiltinBackend) -> None:
    module = importlib.import_module(backend.module)
    assert backend.field in registry._FACTORIES
    implementations = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and value.__module__ == module.__name__
        and "provider" in vars(value)
    ]
    assert [vars(cls)["provider"] for cls in implementations] == [backend.kms_provider]
    assert kms_provider_of(backend.field) is backend.kms_provider


def test_an_unknown_backend_cannot_register() -> None:
    with pytest.raises(ValueError, match="notAKms"):
        registry.register_backend("notAKms")


@pytest.mark.parametrize(
    ("ref", "adoptable"),
    [
        ("local:tests/0b1c2d3e-0000-4000-8000-000000000001", True),
        ("local:demo/0b1c2d3e", True),
        ("local:../../../etc/passwd", False),
        ("local:tests/../../etc/passwd", False),
        ("local:tests/", False),
        ("local:Tests;rm/abc", False),
    ],
)
def test_a_local_adoption_reference_is_a_keystore_and_one_entry(ref: str, adoptable: bool) -> None:
    backend = builtin_backend("local")
    assert not isinstance(backend.adoptable, str)
    assert backend.adoptable.matches(ref) is adoptable

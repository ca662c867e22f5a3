"""Finds the contract target of each registered backend and parametrizes the suite over them.

Tests that need a capability (wrong credentials, an unreachable endpoint, a
KMS-side primary) are parametrized only over targets that have it: nothing is
skipped, a backend without credentials simply has no such case.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.providers.registry import BACKEND_FIELDS, BACKENDS
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from tests.contract import backends
from tests.contract.target import ContractTarget

CAPABILITIES = ("with_wrong_credentials", "unreachable", "primary_ref")


# Registered backends with no server or emulator the suite can start yet; their
# error translation and spec checks are covered by tests/unit/test_<name>_errors.py.
NO_CONTRACT_TARGET: frozenset[str] = frozenset()


def _backend_modules() -> dict[str, ModuleType]:
    """The target module of each registered backend, by spec field: backends/<package>.py."""
    available = {info.name for info in pkgutil.iter_modules(backends.__path__)}
    strays = available - {backend.package for backend in BACKENDS}
    if strays:
        raise pytest.UsageError(f"tests/contract/backends/{sorted(strays)}: no such backend")
    found = {
        backend.field: importlib.import_module(f"{backends.__name__}.{backend.package}")
        for backend in BACKENDS
        if backend.package in available
    }
    untested = set(BACKEND_FIELDS) - set(found)
    if untested != NO_CONTRACT_TARGET:
        raise pytest.UsageError(
            f"registered backends without a contract target: {sorted(untested)}; expected "
            f"{sorted(NO_CONTRACT_TARGET)}. Add tests/contract/backends/<package>.py"
        )
    return dict(sorted(found.items()))


MODULES = _backend_modules()
# What each backend can do, declared by its module so that parametrization needs no server.
DECLARED = {name: set(getattr(m, "CAPABILITIES", ())) for name, m in MODULES.items()}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(capability): run only on targets that have it")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target_name" not in metafunc.fixturenames:
        return
    needed = {m.args[0] for m in metafunc.definition.iter_markers("needs")}
    names = [n for n in MODULES if needed <= DECLARED[n]]
    # No backend with the capability: no cases (deselected below), never a skip.
    metafunc.parametrize("target_name", names or [_NO_TARGET], scope="session")


_NO_TARGET = "no-backend-has-this-capability"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    dropped = [i for i in items if f"[{_NO_TARGET}]" in i.nodeid]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if i not in dropped]


@pytest.fixture(scope="session")
def _targets(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], ContractTarget]]:
    started: dict[str, ContractTarget] = {}
    with ExitStack() as stack:

        def start(name: str) -> ContractTarget:
            if name not in started:
                workdir = tmp_path_factory.mktemp(f"contract-{name}")
                started[name] = stack.enter_context(MODULES[name].open_target(workdir))
                missing = DECLARED[name] - {
                    c for c in CAPABILITIES if getattr(started[name], c) is not None
                }
                assert not missing, f"{name} declares {missing} but its target lacks them"
            return started[name]

        yield start


@pytest.fixture
def target(_targets: Callable[[str], ContractTarget], target_name: str) -> ContractTarget:
    return _targets(target_name)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A fresh SQLite ledger, migrated, for driving keys through the operations."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()

"""Every end-to-end test runs with the admission webhooks on: the shared operator,
which serves them, is started before any test of this folder writes a key.

Tests marked `leak_scan` run after every other test of the session, so that they
scan what all the others left behind (ledger, resources, events, logs, metrics)
for the needles every test registered in `planted_needles`.
"""

from __future__ import annotations

import pytest

from tests.harness.operator import OperatorProcess
from tests.leakscan import Needles


@pytest.fixture(autouse=True, scope="session")
def admission_webhooks(operator: OperatorProcess) -> OperatorProcess:
    return operator


@pytest.fixture(scope="session")
def planted_needles() -> Needles:
    """Credentials, data keys and plaintexts the session's tests used: none may show."""
    return Needles()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "leak_scan: runs after every other test, to scan what they all left behind"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = [item for item in items if item.get_closest_marker("leak_scan")]
    if last:
        items[:] = [item for item in items if not item.get_closest_marker("leak_scan")] + last

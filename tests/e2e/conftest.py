"""Every end-to-end test runs with the admission webhooks on: the shared operator,
which serves them, is started before any test of this folder writes a key."""

from __future__ import annotations

import pytest

from tests.harness.operator import OperatorProcess


@pytest.fixture(autouse=True, scope="session")
def admission_webhooks(operator: OperatorProcess) -> OperatorProcess:
    return operator

"""pytest plugin: the `openbao` fixture, a real OpenBao dev server per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.openbao import OpenBaoServer, start_openbao, stop_openbao


@pytest.fixture(scope="module")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    started = start_openbao(tmp_path_factory.mktemp("vault"))
    try:
        yield started
    finally:
        stop_openbao(started)

"""pytest plugin: the `control_plane` fixture, one Kubernetes API per test process.

With KEYLEDGER_TEST_KUBECONFIG set, tests use that cluster (kind, say) and leave it
running. Otherwise each process (each pytest-xdist worker included) builds the testbin
if needed and starts its own kube-apiserver + etcd on free ports, in its own temp dir.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import (
    EXISTING_CLUSTER_ENV,
    ControlPlane,
    build_testbin,
    start_control_plane,
    stop_control_plane,
    use_existing_cluster,
)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    existing = os.environ.get(EXISTING_CLUSTER_ENV)
    if existing:
        yield use_existing_cluster(Path(existing))
        return
    # Concurrent builds from several workers are serialised by a lock in the script.
    build_testbin()
    # tmp_path_factory gives each xdist worker its own base dir, so planes never share
    # state; pytest keeps the last few runs' dirs, logs included, for post-mortems.
    cp = start_control_plane(tmp_path_factory.mktemp("control-plane"))
    try:
        yield cp
    finally:
        stop_control_plane(cp)

"""Convergence: 1,000 EncryptionKeys applied at once until all are Ready.

keyledger (local provider, PostgreSQL ledger) against a floor: one kopf process
(`floor_operator.py`) making the same API writes for each key (the finalizer
patch, one status patch of the shape keyledger writes, the one Event it posts)
with no KMS or ledger work. Both run as
the operator's ServiceAccount against the same control plane, one after the
other; the keys are created the same way (kubectl, 250 per request).
Target: keyledger within 1.5x of the floor.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.cluster import Bench, bench_cluster, usage
from benchmarks.common import REPO_ROOT, Figure, Report
from tests.harness.controlplane import service_account_kubeconfig

KEYS = int(os.environ.get("BENCH_KEYS", "1000"))
TARGET = 1.5
TIMEOUT_S = 1800


def floor_run(bench: Bench) -> tuple[float, float]:
    """Seconds until all keys were Ready, and the floor process's CPU seconds."""
    namespace, tenant = bench.namespace("floor")
    kubeconfig = service_account_kubeconfig(
        bench.cp, "keyledger-system", "keyledger-operator", bench.workdir / "floor.kubeconfig"
    )
    log = (bench.workdir / "floor.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "--namespace",
            namespace,
            str(REPO_ROOT / "benchmarks" / "floor_operator.py"),
        ],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    try:
        time.sleep(5)  # the watch is up
        started = bench.create_keys(namespace, tenant, {"kind": "KeyProvider", "name": "x"}, KEYS)
        done = bench.wait_all_ready(namespace, KEYS, TIMEOUT_S)
        cpu = usage(process.pid).cpu_s
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    return done - started, cpu


def keyledger_run(bench: Bench) -> tuple[float, float]:
    namespace, tenant = bench.namespace("keyledger")
    operator = bench.operator(bench.database(), namespace)
    try:
        provider = bench.provider("local", namespace)
        bench.wait_provider_ready(provider, namespace, 120)
        started = bench.create_keys(namespace, tenant, provider, KEYS)
        done = bench.wait_all_ready(namespace, KEYS, TIMEOUT_S, alive=operator)
        assert operator.process is not None
        cpu = usage(operator.process.pid).cpu_s
    finally:
        operator.stop()
    return done - started, cpu


def main() -> int:
    report = Report("bench_convergence")
    with bench_cluster() as bench:
        floor_s, floor_cpu = floor_run(bench)
        keyledger_s, keyledger_cpu = keyledger_run(bench)
    report.add(
        Figure(
            f"convergence: {KEYS} keys applied at once until all Ready (local provider, "
            "PostgreSQL) vs a kopf floor making the same API writes",
            "s",
            keyledger_s,
            floor_s,
            TARGET,
            details={
                "keys": KEYS,
                "operator_cpu_s": round(keyledger_cpu, 1),
                "floor_cpu_s": round(floor_cpu, 1),
                "workdir": str(Path(bench.workdir)),
            },
        )
    )
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())

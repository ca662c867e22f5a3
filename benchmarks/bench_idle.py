"""Idle cost at scale: the operator's CPU and RSS idling with 1,000 and 5,000 keys,
on the local provider and on OpenBao (Vault transit), default drift interval (10m).

For each provider and size: a fresh control plane, ledger database and
operator; the keys created at once and timed until all are Ready; then, after
a settling minute, the operator's CPU over BENCH_IDLE_S (default 180 s) and
its RSS at the end. Targets at 5,000 keys: under 5% of one core (the floor: a
whole core, 1.0) and under 300 MB; from 1,000 to 5,000 keys, idle CPU and
convergence time growing no faster than the number of keys (per-key ratio
5,000 vs 1,000 at most 1.0, with 0.15 allowed for a shared machine's noise).
"""

from __future__ import annotations

import os
import sys
import time

from benchmarks.cluster import bench_cluster, usage
from benchmarks.common import Figure, Report

SIZES = tuple(int(n) for n in os.environ.get("BENCH_SIZES", "1000,5000").split(","))
PROVIDERS = tuple(os.environ.get("BENCH_PROVIDERS", "local,vault").split(","))
IDLE_S = float(os.environ.get("BENCH_IDLE_S", "180"))
SETTLE_S = float(os.environ.get("BENCH_SETTLE_S", "60"))
CPU_TARGET = 0.05  # of one core
RSS_TARGET_MB = 300.0
GROWTH_TARGET = 1.15
TIMEOUT_S = 3600


def measure(provider_kind: str, keys: int) -> dict[str, float]:
    with bench_cluster() as bench:
        namespace, tenant = bench.namespace("idle")
        operator = bench.operator(bench.database(), namespace)
        try:
            provider = bench.provider(provider_kind, namespace)
            bench.wait_provider_ready(provider, namespace, 120)
            started = bench.create_keys(namespace, tenant, provider, keys)
            ready = bench.wait_all_ready(namespace, keys, TIMEOUT_S, alive=operator)
            assert operator.process is not None
            pid = operator.process.pid
            time.sleep(SETTLE_S)
            before, t0 = usage(pid), time.monotonic()
            peak = before.rss_mb
            while time.monotonic() - t0 < IDLE_S:
                time.sleep(5)
                operator.assert_running()
                peak = max(peak, usage(pid).rss_mb)
            after, t1 = usage(pid), time.monotonic()
        finally:
            operator.stop()
    result = {
        "converge_s": ready - started,
        "idle_cpu_share": (after.cpu_s - before.cpu_s) / (t1 - t0),
        "rss_mb": after.rss_mb,
        "peak_rss_mb": peak,
    }
    print(f"# {provider_kind} {keys} keys: {result}", flush=True)
    return result


def main() -> int:
    report = Report("bench_idle")
    for provider_kind in PROVIDERS:
        runs = {keys: measure(provider_kind, keys) for keys in SIZES}
        largest = max(SIZES)
        big = runs[largest]
        details = {"idle_s": IDLE_S, "drift_interval": "10m"}
        report.add(
            Figure(
                f"idle CPU, {largest} keys, {provider_kind} provider (share of one core)",
                "cores",
                big["idle_cpu_share"],
                1.0,
                CPU_TARGET,
                floor_is="one core",
                details={**details, "converge_s": round(big["converge_s"], 1)},
            )
        )
        report.add(
            Figure(
                f"idle RSS, {largest} keys, {provider_kind} provider",
                "MB",
                big["rss_mb"],
                RSS_TARGET_MB,
                1.0,
                floor_is="300 MB budget",
                details={**details, "peak_rss_mb": round(big["peak_rss_mb"], 1)},
            )
        )
        if len(SIZES) > 1:
            small = runs[min(SIZES)]
            scale = largest / min(SIZES)
            for name, label in (("idle_cpu_share", "idle CPU"), ("converge_s", "convergence")):
                report.add(
                    Figure(
                        f"{label} growth {min(SIZES)} -> {largest} keys, {provider_kind} "
                        "provider, vs linear",
                        "ratio",
                        big[name] / small[name] if small[name] else float("inf"),
                        scale,
                        GROWTH_TARGET,
                        floor_is=f"linear ({scale:.0f}x)",
                        details={
                            str(min(SIZES)): round(small[name], 4),
                            str(largest): round(big[name], 4),
                        },
                    )
                )
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())

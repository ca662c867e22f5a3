"""What every benchmark shares: timing, one JSON line per figure, the exit code.

A figure is keyledger's number next to the floor's (or a peer's) from the same
run, and their ratio against a target: the machine's speed cancels out, its
load mostly does (both sides run under it). Run them with `make bench`, or one
with `python -m benchmarks.bench_<name>` from the repository root.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    """keyledger's `value` against `floor`; met when `ratio` is at most `target`
    (or at least, with `higher_is_better`)."""

    figure: str
    unit: str
    keyledger: float
    floor: float
    target: float
    floor_is: str = "floor"
    higher_is_better: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.keyledger / self.floor if self.floor else float("inf")

    @property
    def met(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def line(self) -> str:
        record = asdict(self)
        record.update(ratio=round(self.ratio, 3), met=self.met)
        for name in ("keyledger", "floor"):
            record[name] = round(record[name], 6)
        return json.dumps(record, sort_keys=False)


class Report:
    """Prints each figure as it is made; `exit_code` is 1 when any target was missed."""

    def __init__(self, benchmark: str) -> None:
        self.benchmark = benchmark
        self.figures: list[Figure] = []
        machine = {
            "benchmark": benchmark,
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "python": platform.python_version(),
            "load_average": [round(n, 2) for n in os.getloadavg()],
        }
        print(json.dumps(machine), flush=True)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(figure.line(), flush=True)
        return figure

    def exit_code(self) -> int:
        missed = [f.figure for f in self.figures if not f.met]
        if missed:
            print(f"{self.benchmark}: MISSED {', '.join(missed)}", file=sys.stderr)
        return 1 if missed else 0


def per_call(operation: Callable[[], object], calls: int, rounds: int = 5) -> float:
    """Best of `rounds` mean seconds per call: the least disturbed run."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            operation()
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def interleaved(
    operations: dict[str, Callable[[], object]], calls: int, rounds: int = 7
) -> dict[str, float]:
    """`per_call` of several operations, their rounds taken in turn, so that a
    burst of load on a shared machine falls on all of them alike."""
    best = dict.fromkeys(operations, float("inf"))
    for _ in range(rounds):
        for name, operation in operations.items():
            started = time.perf_counter()
            for _ in range(calls):
                operation()
            best[name] = min(best[name], (time.perf_counter() - started) / calls)
    return best


def alternating(
    operations: dict[str, Callable[[], object]], calls: int, rounds: int = 7
) -> dict[str, float]:
    """`interleaved`, call by call: each call timed on its own, the operations taking
    turns within a round, so that every call follows the same mix of the others.

    For operations that each wait on a server. In rounds of 2,000 calls of one
    operation, a raw query's round trip came out anywhere from 82 to 128 us from
    one run to the next, against 130-144 us for the reads built on it: a round of
    one operation settles into one speed and keeps it. Taken in turns, call by
    call, the operations share whatever the machine is doing."""
    names = list(operations)
    best = dict.fromkeys(names, float("inf"))
    clock = time.perf_counter
    for _ in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for _ in range(calls):
            for name in names:
                started = clock()
                operations[name]()
                spent[name] += clock() - started
        for name in names:
            best[name] = min(best[name], spent[name] / calls)
    return best

"""A stream far larger than the memory the process may use goes through and back.

The child process caps its address space (RLIMIT_AS) at 64 MiB above what it
holds once set up, then seals 1 GiB from a source that makes the bytes as they
are read, and opens the result into a digest: constant memory both ways.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GIB = 1 << 30
LIMIT = 64 << 20
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_one_gib_streams_through_64_mib(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.stream_within_limit",
            str(tmp_path),
            str(GIB),
            str(LIMIT),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["written"] == report["read"] == GIB
    assert report["same"] is True
    assert report["sealed_bytes"] > GIB  # every byte went through the file
    # The cap holds: the child could not allocate the 64 MiB at once.
    assert report["limit_bites"] is True

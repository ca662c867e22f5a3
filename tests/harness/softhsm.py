"""A throwaway SoftHSM2 token directory for the tests, from Debian's `softhsm2` package.

SoftHSM reads SOFTHSM2_CONF when the module is C_Initialize'd, which python-pkcs11
does once per process, and it never rescans its token directory afterwards. So
the harness is process-wide: the first call to `softhsm()` writes a config into
a temp dir, points SOFTHSM2_CONF at it, and initialises every token the tests
will use with `softhsm2-util`, all before anything loads the module. The temp
dir is removed when the process exits (the loaded module keeps files open until
then).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

SOFTHSM_MODULE_CANDIDATES = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
)
# Every token the test run uses; SoftHSM sees only tokens made before the module loads.
TOKEN_LABELS = ("keyledger-contract", "keyledger-wrong-pin")
_INIT_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class SoftHsmToken:
    module_path: str
    label: str
    pin: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class SoftHsm:
    module_path: str
    token_dir: Path
    tokens: dict[str, SoftHsmToken]

    def token(self, label: str) -> SoftHsmToken:
        try:
            return self.tokens[label]
        except KeyError:
            raise RuntimeError(
                f"no SoftHSM token {label!r}: add it to TOKEN_LABELS in {__name__} "
                "(tokens must exist before the module is loaded)"
            ) from None


_instance: SoftHsm | None = None
_lock = threading.Lock()


def softhsm() -> SoftHsm:
    """The process's SoftHSM tokens, made on first use."""
    global _instance  # noqa: PLW0603 - one SoftHSM configuration per process, by design
    with _lock:
        if _instance is None:
            _instance = _start()
        return _instance


def find_softhsm_module() -> str:
    for candidate in SOFTHSM_MODULE_CANDIDATES:
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError(
        "SoftHSM2's PKCS#11 module (libsofthsm2.so) is not installed: run `make test`, "
        "which installs Debian's softhsm2 package"
    )


def _start() -> SoftHsm:
    module_path = find_softhsm_module()
    if shutil.which("softhsm2-util") is None:
        raise RuntimeError("softhsm2-util is missing: run `make test` (Debian package softhsm2)")
    _refuse_if_already_loaded(module_path)
    run_dir = Path(tempfile.mkdtemp(prefix="keyledger-softhsm-"))
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    token_dir = run_dir / "tokens"
    token_dir.mkdir(mode=0o700)
    config = run_dir / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    # Read by the module at C_Initialize, and by softhsm2-util below.
    os.environ["SOFTHSM2_CONF"] = str(config)
    tokens = {label: _init_token(module_path, label) for label in TOKEN_LABELS}
    return SoftHsm(module_path=module_path, token_dir=token_dir, tokens=tokens)


def _init_token(module_path: str, label: str) -> SoftHsmToken:
    pin = secrets.token_hex(8)
    result = subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            secrets.token_hex(8),
            "--pin",
            pin,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=_INIT_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"softhsm2-util --init-token {label} failed (exit {result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return SoftHsmToken(module_path=module_path, label=label, pin=pin)


def _refuse_if_already_loaded(module_path: str) -> None:
    """A module loaded before SOFTHSM2_CONF was set would never see our tokens."""
    pkcs11 = sys.modules.get("pkcs11")
    loaded = getattr(pkcs11, "_loaded", {}) if pkcs11 is not None else {}
    if any(os.path.realpath(path) == os.path.realpath(module_path) for path in loaded):
        raise RuntimeError(
            f"{module_path} was loaded in this process before the SoftHSM harness configured "
            "it; use tests.harness.softhsm.softhsm() before anything opens the module"
        )

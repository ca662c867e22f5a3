"""The Kubernetes control plane the tests run against, and kubectl to talk to it.

Either a real kube-apiserver + etcd started by hack/testbin.sh (the default), or an
existing cluster such as kind when KEYLEDGER_TEST_KUBECONFIG names its kubeconfig.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTBIN_SCRIPT = REPO_ROOT / "hack" / "testbin.sh"
EXISTING_CLUSTER_ENV = "KEYLEDGER_TEST_KUBECONFIG"

# A cold build compiles all of Kubernetes; a warm one only checks a stamp file.
_BUILD_TIMEOUT_S = 3600
# hack/testbin.sh waits up to 90 s for /readyz; leave it room to report why it gave up.
_START_TIMEOUT_S = 180
_STOP_TIMEOUT_S = 60
_KUBECTL_TIMEOUT_S = 60
_APISERVER_GRACE_S = 3


def testbin_bin_dir() -> Path:
    """Where hack/testbin.sh puts kube-apiserver, etcd and kubectl."""
    default = REPO_ROOT / ".cache" / "kube-testbin"
    return Path(os.environ.get("KEYLEDGER_TESTBIN_DIR", default)) / "bin"


@dataclasses.dataclass(frozen=True)
class ControlPlane:
    """A reachable Kubernetes API and an admin kubeconfig for it.

    state_dir is None for a cluster we did not start and must not stop; bin_dir is None
    when kubectl comes from PATH.
    """

    kubeconfig: Path
    server: str
    bin_dir: Path | None
    state_dir: Path | None

    @property
    def kubectl_path(self) -> str:
        if self.bin_dir is not None:
            return str(self.bin_dir / "kubectl")
        found = shutil.which("kubectl")
        if found is None:
            raise RuntimeError(
                "kubectl is not on PATH; run `hack/testbin.sh build` or install kubectl"
            )
        return found


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message includes kubectl's own explanation."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}"


def build_testbin() -> None:
    """Build kube-apiserver, etcd and kubectl unless the cached ones are current."""
    _run_testbin("build", timeout=_BUILD_TIMEOUT_S)


def start_control_plane(state_dir: Path) -> ControlPlane:
    """Start (or find already running) a control plane whose files live in state_dir."""
    _run_testbin("start", str(state_dir), timeout=_START_TIMEOUT_S)
    state_dir = state_dir.resolve()
    cp = ControlPlane(
        kubeconfig=state_dir / "kubeconfig",
        server="",
        bin_dir=testbin_bin_dir(),
        state_dir=state_dir,
    )
    return _with_server(cp)


def stop_control_plane(cp: ControlPlane) -> None:
    """Stop a control plane this module started; an existing cluster is left alone."""
    if cp.state_dir is not None:
        _run_testbin("stop", str(cp.state_dir), timeout=_STOP_TIMEOUT_S)


def use_existing_cluster(kubeconfig: Path) -> ControlPlane:
    """Describe a cluster someone else runs (kind, say) reached through kubeconfig.

    kubectl comes from the testbin if it has been built, else from PATH.
    """
    bin_dir = testbin_bin_dir()
    cp = ControlPlane(
        kubeconfig=kubeconfig.resolve(),
        server="",
        bin_dir=bin_dir if (bin_dir / "kubectl").is_file() else None,
        state_dir=None,
    )
    return _with_server(cp)


def kubectl(
    cp: ControlPlane,
    *args: str,
    kubeconfig: Path | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against cp, as admin unless another kubeconfig is given."""
    command = [cp.kubectl_path, "--kubeconfig", str(kubeconfig or cp.kubeconfig), *args]
    result = subprocess.run(
        command,
        input=input,
        capture_output=True,
        text=True,
        timeout=_KUBECTL_TIMEOUT_S,
        check=False,
    )
    if check and result.returncode != 0:
        raise KubectlError(result.returncode, command, result.stdout, result.stderr)
    return result


def service_account_kubeconfig(cp: ControlPlane, namespace: str, name: str, path: Path) -> Path:
    """Write a kubeconfig at path that authenticates as ServiceAccount namespace/name.

    The ServiceAccount must exist. The token is a bound token valid for a day, so tests
    see exactly the permissions RBAC grants that ServiceAccount.
    """
    token = kubectl(
        cp, "create", "token", name, "--namespace", namespace, "--duration=24h"
    ).stdout.strip()
    cluster = _admin_kubeconfig(cp)["clusters"][0]["cluster"]
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "cluster", "user": user}}],
        "current-context": user,
    }
    # The token is a credential: readable by the owner only, written nowhere else.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)  # JSON is YAML, so kubectl and client libraries read it
    return path


def _admin_kubeconfig(cp: ControlPlane) -> dict[str, Any]:
    """The current context's cluster and user, with any referenced files inlined."""
    view = kubectl(cp, "config", "view", "--minify", "--flatten", "--output=json")
    config: dict[str, Any] = json.loads(view.stdout)
    return config


def _with_server(cp: ControlPlane) -> ControlPlane:
    server = kubectl(
        cp, "config", "view", "--minify", "--output=jsonpath={.clusters[0].cluster.server}"
    ).stdout.strip()
    return dataclasses.replace(cp, server=server)


def _run_testbin(*args: str, timeout: float) -> None:
    # The script needs a python3 to pick free ports; use ours rather than whatever
    # PATH offers.
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(TESTBIN_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"hack/testbin.sh {' '.join(args)} failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )


def stop_apiserver(cp: ControlPlane) -> list[str]:
    """Stop only kube-apiserver of a control plane this module started, leaving etcd
    (and so every object) as it is; returns its command line for `start_apiserver`."""
    if cp.state_dir is None:
        raise RuntimeError("only a control plane the tests started can be stopped")
    pid_file = cp.state_dir / "kube-apiserver.pid"
    pid = int(pid_file.read_text())
    command = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    if not any(str(cp.state_dir) in arg for arg in command):
        raise RuntimeError(f"pid {pid} is not this control plane's kube-apiserver")
    os.kill(pid, signal.SIGTERM)
    # Its graceful shutdown can outwait open watches for a minute: after a short
    # grace period it is killed, as a crashed or fenced-off API server would be.
    deadline = time.monotonic() + _APISERVER_GRACE_S
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return command


def start_apiserver(cp: ControlPlane, command: list[str]) -> None:
    """Start kube-apiserver again as it ran before (same port, certificates, etcd)
    and wait until it is ready."""
    assert cp.state_dir is not None
    with (cp.state_dir / "kube-apiserver.log").open("ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    # hack/testbin.sh stop finds it by this file, as it found the first one.
    (cp.state_dir / "kube-apiserver.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready = kubectl(cp, "get", "--raw", "/readyz", check=False)
        if ready.returncode == 0 and ready.stdout.strip() == "ok":
            return
        if process.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited with {process.returncode} on restart")
        time.sleep(0.25)
    raise RuntimeError(f"kube-apiserver not ready {_START_TIMEOUT_S} s after its restart")


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, waiting for a parent that never reaps it, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"

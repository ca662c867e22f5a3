"""The image's entry points, run the way the container runs them.

No container engine here, so the test plays the container runtime: the command
is the Dockerfile's ENTRYPOINT plus the rendered production manifests' `args`,
the environment is the image's ENV plus the container's `env` (Secrets and the
downward API resolved), container ports are mapped to free local ports, and
every path the image writes must sit on a volume the Deployment mounts (its
root filesystem is read-only). Then: the migrations Job's `keyledger db upgrade`,
and `keyledger run` answering the Deployment's liveness and readiness probes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.script import ScriptDirectory
from sqlalchemy import text

from keyledger.admission.certificates import serving_certificate
from keyledger.settings import Settings
from keyledger.store.engine import make_engine, migrations_dir
from tests.harness.controlplane import ControlPlane, kubectl, service_account_kubeconfig
from tests.harness.net import free_port
from tests.harness.operator import REPO_ROOT
from tests.harness.postgres import PostgresServer, create_database
from tests.harness.softhsm import softhsm

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

PROBE_DEADLINE_S = 90
READ_ONLY_ROOT = "/dev/null"


class Image:
    """The final stage of the Dockerfile: entry point, default command, ENV, USER, COPYs."""

    def __init__(self, dockerfile: Path) -> None:
        joined = re.sub(r"\\\n", " ", dockerfile.read_text())
        lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
        final = max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
        self.entrypoint: list[str] = []
        self.cmd: list[str] = []
        self.env: dict[str, str] = {}
        self.user = ""
        self.copies: dict[str, str] = {}  # image path -> repository path
        for line in lines[final + 1 :]:
            instruction, _, rest = line.partition(" ")
            if instruction == "ENTRYPOINT":
                self.entrypoint = json.loads(rest)
            elif instruction == "CMD":
                self.cmd = json.loads(rest)
            elif instruction == "ENV":
                for pair in rest.split():
                    name, _, value = pair.partition("=")
                    self.env[name] = value
            elif instruction == "USER":
                self.user = rest
            elif instruction == "COPY" and "--from" not in rest:
                source, target = rest.split()
                self.copies[target] = source


class Container:
    """One container of a rendered pod spec, run as a local process."""

    def __init__(
        self, image: Image, pod: dict[str, Any], secrets: dict[str, str], root: Path
    ) -> None:
        self.image = image
        self.spec = pod["containers"][0]
        self.pod = pod
        self.secrets = secrets
        self.root = root
        self.ports = {p["name"]: free_port() for p in self.spec.get("ports", [])}
        self.mounts = {m["mountPath"]: root / m["name"] for m in self.spec.get("volumeMounts", [])}
        for local in self.mounts.values():
            local.mkdir(parents=True, exist_ok=True)

    def container_port(self, name: str) -> int:
        return int(next(p for p in self.spec["ports"] if p["name"] == name)["containerPort"])

    def local_path(self, image_path: str) -> str:
        """Where an image path lives here: a mounted volume, a file the image copied,
        or else the read-only root filesystem, played by a path under /dev/null that
        nothing can create or write."""
        for mount, local in self.mounts.items():
            if image_path == mount or image_path.startswith(mount + "/"):
                return str(local) + image_path[len(mount) :]
        for target, source in self.image.copies.items():
            if image_path == target or image_path.startswith(target + "/"):
                return str(REPO_ROOT / source) + image_path[len(target) :]
        return READ_ONLY_ROOT + image_path

    def command(self) -> list[str]:
        args = self.spec.get("args", self.image.cmd)
        for name, local in self.ports.items():
            args = [a.replace(f":{self.container_port(name)}/", f":{local}/") for a in args]
        [program] = self.image.entrypoint
        return [str(Path(sys.executable).parent / program), *args]

    def environment(self, **extra: str) -> dict[str, str]:
        env = {k: self.local_path(v) if v.startswith("/") else v for k, v in self.image.env.items()}
        for entry in self.spec.get("env", []):
            if "value" in entry:
                value = entry["value"]
                env[entry["name"]] = self.local_path(value) if value.startswith("/") else value
            elif "secretKeyRef" in entry["valueFrom"]:
                ref = entry["valueFrom"]["secretKeyRef"]
                env[entry["name"]] = self.secrets[f"{ref['name']}/{ref['key']}"]
            else:
                assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
                env[entry["name"]] = "keyledger-system"
        # Ports named in the environment follow the port mapping, like the arguments.
        for name, local in self.ports.items():
            container = str(self.container_port(name))
            env = {k: str(local) if v == container else v for k, v in env.items()}
        if "metrics" in self.ports:
            env["KEYLEDGER_METRICS_PORT"] = str(self.ports["metrics"])
        return {"PATH": os.environ["PATH"], **env, **extra}

    def probe_url(self, probe: str) -> str:
        get = self.spec[probe]["httpGet"]
        return f"http://127.0.0.1:{self.ports[get['port']]}{get['path']}"


def _render(cp: ControlPlane) -> list[dict[str, Any]]:
    out = kubectl(cp, "kustomize", str(REPO_ROOT / "manifests/overlays/production")).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _pod(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(o for o in objects if o["kind"] == kind)["spec"]["template"][
        "spec"
    ]
    return found


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()
    except OSError:
        return 0, ""


def _wait_status(
    url: str, want: int, process: subprocess.Popen[bytes], log: Path, saying: str = ""
) -> str:
    deadline = time.monotonic() + PROBE_DEADLINE_S
    last: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        last = _get(url)
        if last[0] == want and saying in last[1]:
            return last[1]
        assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"{url} answered {last}, not {want}:\n{log.read_text()[-3000:]}")


def _tls_handshake(port: int, host: str, ca: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + PROBE_DEADLINE_S
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                assert tls.version()
                return
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, f"nothing listens on the webhook port {port}"
            time.sleep(0.5)


@pytest.fixture
def peering(crds: ControlPlane) -> str:
    """The peering the manifests name, installed as they install it."""
    for doc in yaml.safe_load_all((REPO_ROOT / "manifests/base/peering.yaml").read_text()):
        if doc["kind"] == "CustomResourceDefinition":
            kubectl(crds, "apply", "--server-side", "-f", "-", input=yaml.safe_dump(doc))
            kubectl(crds, "wait", "--for=condition=Established", f"crd/{doc['metadata']['name']}")
        else:
            kubectl(crds, "apply", "-f", "-", input=yaml.safe_dump(doc))
    return "keyledger"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_image_user_and_writable_paths_fit_the_read_only_non_root_pod(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    image = Image(REPO_ROOT / "Dockerfile")
    uid, _, gid = image.user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    pod = _pod(_render(control_plane), "Deployment")
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid)
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    container = Container(image, pod, {"keyledger-database/url": "unused"}, tmp_path)
    for name in ("KEYLEDGER_DATA_DIR", "HOME"):
        assert not container.local_path(image.env[name]).startswith(READ_ONLY_ROOT), (
            f"{name}={image.env[name]} is not on a volume: the root filesystem is read-only"
        )
    assert Settings().metrics_port == container.container_port("metrics")


def test_db_upgrade_and_run_answer_as_the_manifests_call_them(
    crds: ControlPlane,
    peering: str,
    postgres_server: PostgresServer,
    running: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    image = Image(REPO_ROOT / "Dockerfile")
    objects = _render(crds)
    url = create_database(postgres_server, f"keyledger_image_{uuid.uuid4().hex[:8]}")
    secrets = {"keyledger-database/url": url}

    job = Container(image, _pod(objects, "Job"), secrets, tmp_path / "job")
    for _ in range(2):  # a Job retried after success must not fail
        done = subprocess.run(
            job.command(),
            env=job.environment(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    head = ScriptDirectory(str(migrations_dir())).get_current_head()
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    engine.dispose()

    namespace = f"img-{uuid.uuid4().hex[:8]}"
    kubectl(crds, "create", "namespace", namespace)
    kubeconfig = service_account_kubeconfig(
        crds, "keyledger-system", "keyledger-operator", tmp_path / "kubeconfig"
    )
    softhsm()  # every operator checks every ClusterKeyProvider, PKCS#11 ones included
    outside = {
        # What the cluster gives a pod: its ServiceAccount's credentials.
        "KUBECONFIG": str(kubeconfig),
        "SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"],
        # Keep this operator to a namespace of its own beside the suite's operators,
        # and off the webhook configurations the suite's operator keeps.
        "KEYLEDGER_NAMESPACES": namespace,
        "KEYLEDGER_WEBHOOK_CONFIGURATION": "",
        "KEYLEDGER_WEBHOOK_LISTEN": "127.0.0.1",
    }
    operator = Container(image, _pod(objects, "Deployment"), secrets, tmp_path / "pod")
    env = operator.environment()
    assert env["KEYLEDGER_PEERING"] == peering
    # The webhook certificate Secret both replicas mount, as cert-manager would fill it.
    tls_dir = Path(env["KEYLEDGER_WEBHOOK_CERT_DIR"])
    assert tls_dir.is_relative_to(tmp_path), f"{tls_dir} is not the pod's volume"
    serving_certificate(tls_dir, [env["KEYLEDGER_WEBHOOK_HOST"]])
    (tls_dir / ".made-by-keyledger").unlink()
    made = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            operator.command(), env=operator.environment(**outside), stdout=out, stderr=out
        )
    running.append(process)
    assert _wait_status(operator.probe_url("readinessProbe"), 200, process, log) == "ready\n"
    _wait_status(operator.probe_url("livenessProbe"), 200, process, log)
    metrics = _get(f"http://127.0.0.1:{operator.ports['metrics']}/metrics")[1]
    assert "keyledger_reconcile_duration_seconds" in metrics
    # The webhook port speaks TLS with the mounted certificate, for the Service's
    # DNS name; the operator used the Secret as it is and wrote nothing there.
    _tls_handshake(operator.ports["webhook"], env["KEYLEDGER_WEBHOOK_HOST"], tls_dir / "ca.crt")
    assert {p.name: p.read_bytes() for p in tls_dir.iterdir()} == made
    process.terminate()
    assert process.wait(30) == 0, log.read_text()[-3000:]

    # The same pod with a ledger that does not answer: alive, but not ready, and why.
    secrets["keyledger-database/url"] = f"postgresql://keyledger@127.0.0.1:{free_port()}/none"
    cut_off = Container(image, _pod(objects, "Deployment"), secrets, tmp_path / "cut-off")
    log = tmp_path / "cut-off.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            cut_off.command(), env=cut_off.environment(**outside), stdout=out, stderr=out
        )
    running.append(process)
    _wait_status(cut_off.probe_url("livenessProbe"), 200, process, log)
    reason = _wait_status(
        cut_off.probe_url("readinessProbe"), 503, process, log, saying="ledger database"
    )
    assert "the ledger database does not answer" in reason
    assert "127.0.0.1" not in reason  # no part of the URL
    assert shutil.which("keyledger", path=str(Path(sys.executable).parent))

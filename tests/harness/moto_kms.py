"""A throwaway AWS KMS for the tests: moto's `ThreadedMotoServer` with IAM authentication on.

The server runs in a child process (`python -m tests.harness.moto_kms`), not in
the test process, because moto keeps its authentication switch and all its state
in module globals: switched on in-process, it would also apply to any other moto
use in the same pytest run. The child binds port 0 on 127.0.0.1 and prints the
port it got, so there is no race for a "free" port.

Moto accepts any credentials unless IAM authentication is on. `start_moto_kms`
therefore creates an IAM user with an access key and a policy that allows
exactly the KMS actions the backend declares (`REQUIRED_IAM_ACTIONS`), then
switches authentication on through moto's own `/moto-api/reset-auth` endpoint.
From then on every request is signature-checked against that key and authorized
against that policy: a wrong secret gets `SignatureDoesNotMatch`, an unknown key
id `InvalidClientTokenId`, a missing permission `AccessDenied`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import boto3

from keyledger.providers.aws.backend import REQUIRED_IAM_ACTIONS

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"
IAM_USER = "keyledger-operator"

_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 15
# Only used to create the IAM user, before authentication is switched on.
_BOOTSTRAP_KEY = "bootstrap"


@dataclasses.dataclass(frozen=True)
class MotoKms:
    """A running moto server and the IAM user whose key it accepts."""

    endpoint: str
    region: str
    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    process: subprocess.Popen[str] = dataclasses.field(repr=False, compare=False)

    def kms_client(self) -> KMSClient:
        """A plain boto3 KMS client as the IAM user, for checks behind the backend's back."""
        return boto3.client(
            "kms",
            region_name=self.region,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )


def start_moto_kms(log_file: Path | None = None) -> MotoKms:
    """Start the server, create the IAM user, switch authentication on."""
    log: IO[str] | int = subprocess.DEVNULL if log_file is None else log_file.open("a")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.moto_kms"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": _python_path()},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    if log_file is not None:
        assert not isinstance(log, int)
        log.close()  # the child holds its own descriptor
    try:
        endpoint = f"http://127.0.0.1:{_read_port(process, log_file)}"
        access_key_id, secret = _create_operator_user(endpoint)
        _switch_authentication_on(endpoint)
        server = MotoKms(endpoint, REGION, access_key_id, secret, process)
        _prove_the_user_is_accepted(server)
        return server
    except BaseException:
        _stop_process(process)
        raise


def stop_moto_kms(server: MotoKms) -> None:
    _stop_process(server.process)


@contextmanager
def moto_kms(log_file: Path | None = None) -> Iterator[MotoKms]:
    server = start_moto_kms(log_file)
    try:
        yield server
    finally:
        stop_moto_kms(server)


def _python_path() -> str:
    # The child must import `tests` (from the repo root) and `keyledger` (from operator/).
    parts = [str(REPO_ROOT), str(REPO_ROOT / "operator"), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def _read_port(process: subprocess.Popen[str], log_file: Path | None) -> int:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], _START_TIMEOUT_S)
    line = process.stdout.readline() if ready else ""
    if not line.strip().isdigit():
        tail = log_file.read_text(errors="replace")[-2000:] if log_file else "(no log file)"
        raise RuntimeError(
            f"moto KMS server did not report its port within {_START_TIMEOUT_S} s "
            f"(exit code {process.poll()}); its log:\n{tail}"
        )
    return int(line)


def _create_operator_user(endpoint: str) -> tuple[str, str]:
    iam = boto3.client(
        "iam",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=_BOOTSTRAP_KEY,
        aws_secret_access_key=_BOOTSTRAP_KEY,
    )
    iam.create_user(UserName=IAM_USER)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": list(REQUIRED_IAM_ACTIONS), "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName=IAM_USER, PolicyName="keyledger-kms", PolicyDocument=json.dumps(policy)
    )
    key = iam.create_access_key(UserName=IAM_USER)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _switch_authentication_on(endpoint: str) -> None:
    # moto's server-mode switch: authenticate every request after the first 0.
    # Not form-encoded: moto reads the count from the raw body.
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"moto refused to switch authentication on: {response.status}")


def _prove_the_user_is_accepted(server: MotoKms) -> None:
    """Fail fast if the server refuses the right key: a wrong-key test would then prove nothing."""
    boto3.client(
        "kms",
        region_name=server.region,
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
    ).list_keys(Limit=1)


def _stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    assert process.stdin is not None
    process.stdin.close()  # the child stops its server when stdin closes
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=_STOP_TIMEOUT_S)
    finally:
        if process.stdout is not None:
            process.stdout.close()


def _serve_until_stdin_closes() -> None:
    """The child: serve on a kernel-chosen port, print it, stop when the parent lets go."""
    # Imported here: the parent process never needs moto's server (flask, werkzeug).
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    _serve_until_stdin_closes()

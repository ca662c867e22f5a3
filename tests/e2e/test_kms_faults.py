"""The operator against a throttling, failing, slow AWS KMS and Vault.

A fault proxy (tests/harness/fault_proxy.py) sits in front of the real test
servers (moto, OpenBao). First a key on each whose every creating call is
throttled or fails: it waits as Ready=False with the reason, retrying with a
growing delay, and nothing is made twice meanwhile. Then faults on a random
share of every call: every key is created and rotated, once, and the KMS holds
exactly the versions the ledger records.

`make soak` runs this with a larger share, more keys and rotations:
KEYLEDGER_FAULT_SHARE, KEYLEDGER_FAULT_KEYS, KEYLEDGER_FAULT_ROTATIONS,
KEYLEDGER_FAULT_SEED.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.providers.aws.names import KEY_NAME_TAG, TENANT_TAG, VERSION_TAG
from tests.contract.backends.vault import TRANSIT_MOUNT, prepare_server, vault_options
from tests.fixtures_operator import (
    annotate,
    apply,
    encryption_key,
    get,
    new_operator,
    ready_condition,
    tenant_namespace,
    wait_condition,
    wait_for,
    wait_not_ready,
)
from tests.harness.controlplane import ControlPlane, kubectl
from tests.harness.fault_proxy import Call, FaultProxy, FaultRule
from tests.harness.moto_kms import MotoKms, moto_kms
from tests.harness.openbao import OpenBaoServer, start_openbao, stop_openbao
from tests.harness.operator import OperatorProcess
from tests.ledger_checks import handled_counts, kms_refs, versions_by_key

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

SHARE = float(os.environ.get("KEYLEDGER_FAULT_SHARE", "0.15"))
KEYS = int(os.environ.get("KEYLEDGER_FAULT_KEYS", "1"))
ROTATIONS = int(os.environ.get("KEYLEDGER_FAULT_ROTATIONS", "1"))
SEED = int(os.environ.get("KEYLEDGER_FAULT_SEED", "11"))
BACKENDS = ("aws", "vault")
# Long enough for a few retries: 3 s, then 6 s, then 12 s (handlers/errors.py).
BACKOFF_WINDOW_S = 12.0
FIRST_RETRY_S = 3.0
# Faults fail passes, and retries back off up to 2 minutes apart.
CONVERGENCE_TIMEOUT = float(os.environ.get("KEYLEDGER_SOAK_TIMEOUT_S", "240"))


@dataclass
class FaultStack:
    operator: OperatorProcess
    namespace: str
    tenant: str
    proxies: dict[str, FaultProxy]
    moto: MotoKms
    bao: OpenBaoServer


def is_provider_check(call: Call) -> bool:
    """The connectivity check behind a provider's Ready condition (30 s apart). A
    failed one makes every key wait for the next, which no key-level retry
    shortens; the random faults spare it so that the test measures the keys."""
    if call.operation == "ListKeys":
        return b'"Limit": 1' in call.body
    return call.operation.startswith(
        (
            "GET /v1/auth/token/lookup-self",
            "GET /v1/sys/internal/ui/mounts/",
            "POST /v1/sys/capabilities-self",
        )
    )


class FirstCreation:
    """Matches the first call that creates each KMS key or version: losing its reply
    (the KMS acted, the caller cannot know) is what idempotency markers are for."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, call: Call) -> bool:
        if call.operation == "CreateKey":
            what = str(json.loads(call.body).get("Description"))
        elif call.method == "POST" and re.fullmatch(
            rf"/v1/{TRANSIT_MOUNT}/keys/[^/]+(/rotate)?", call.path
        ):
            what = call.path
        else:
            return False
        if what in self.seen:
            return False
        self.seen.add(what)
        return True


@pytest.fixture(scope="module")
def stack(
    crds: ControlPlane, operator_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultStack]:
    workdir = tmp_path_factory.mktemp("faults")
    with ExitStack() as cleanup:
        moto = cleanup.enter_context(moto_kms(log_file=workdir / "moto.log"))
        bao = start_openbao(workdir)
        cleanup.callback(stop_openbao, bao)
        token = prepare_server(bao)
        proxies = {
            "aws": FaultProxy(moto.endpoint, "aws", seed=SEED).start(),
            "vault": FaultProxy(bao.address, "vault", seed=SEED).start(),
        }
        for proxy in proxies.values():
            cleanup.callback(proxy.stop)
        tenant = f"faults-{uuid.uuid4().hex[:8]}"
        namespace = tenant_namespace(crds, f"fx-{uuid.uuid4().hex[:8]}", tenant)
        secrets = {
            "aws": {"accessKeyId": moto.access_key_id, "secretAccessKey": moto.secret_access_key},
            "vault": {"token": token},
        }
        specs: dict[str, dict[str, Any]] = {
            "aws": {"awsKms": {"region": moto.region, "endpoint": proxies["aws"].url}},
            "vault": {"vault": vault_options(proxies["vault"].url)},
        }
        for backend in BACKENDS:
            apply(
                crds,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"{backend}-credentials", "namespace": namespace},
                    "stringData": secrets[backend],
                },
            )
            apply(
                crds,
                {
                    "apiVersion": "keyledger.io/v1alpha1",
                    "kind": "KeyProvider",
                    "metadata": {"name": backend, "namespace": namespace},
                    "spec": {
                        **specs[backend],
                        "credentialsRef": {"name": f"{backend}-credentials"},
                    },
                },
            )
        operator = new_operator(crds, operator_database, workdir / "operator", ("fx-*",))
        operator.start()
        cleanup.callback(print, f"\nfaults operator log: {operator.log_path}")
        cleanup.callback(operator.stop)
        for backend in BACKENDS:
            wait_condition(crds, "kp", backend, "Ready", namespace=namespace, operator=operator)
        yield FaultStack(operator, namespace, tenant, proxies, moto, bao)


def key(stack: FaultStack, name: str, backend: str, **annotations: str) -> dict[str, Any]:
    manifest = encryption_key(
        name,
        stack.namespace,
        tenant=stack.tenant,
        provider=backend,
        providerRef={"kind": "KeyProvider", "name": backend},
    )
    if annotations:
        manifest["metadata"]["annotations"] = annotations
    return manifest


def passes(operator: OperatorProcess, namespace: str, name: str) -> int:
    """Reconcile passes the operator started for the key (one log line each)."""
    line = re.compile(rf"\[{re.escape(namespace)}/{re.escape(name)}\] reconciling, correlation")
    return len(line.findall(operator.log_text()))


def aws_versions(moto: MotoKms, tenant: str) -> Counter[tuple[str, str]]:
    """(key name, version) -> how many enabled KMS keys carry those tags."""
    client = moto.kms_client()
    found: Counter[tuple[str, str]] = Counter()
    for page in client.get_paginator("list_keys").paginate():
        for entry in page["Keys"]:
            tags = {
                t["TagKey"]: t["TagValue"]
                for t in client.list_resource_tags(KeyId=entry["KeyId"])["Tags"]
            }
            if tags.get(TENANT_TAG) != tenant:
                continue
            state = client.describe_key(KeyId=entry["KeyId"])["KeyMetadata"]["KeyState"]
            name = tags.get(KEY_NAME_TAG, "?")
            version = tags.get(VERSION_TAG, "?")
            found[(name, version if state == "Enabled" else f"{version} {state}")] += 1
    return found


def vault_versions(bao: OpenBaoServer, tenant: str, names: list[str]) -> dict[str, int]:
    root = bao.root_client()
    result = {}
    for name in names:
        data = root.secrets.transit.read_key(
            f"keyledger.{tenant}.{name}", mount_point=TRANSIT_MOUNT
        )
        result[name] = len(data["data"]["keys"])
    return result


def all_at_version(cp: ControlPlane, namespace: str, names: list[str], version: int) -> bool:
    for name in names:
        status = get(cp, "ek", name, namespace).get("status", {})
        if (
            status.get("version") != version
            or ready_condition({"status": status})["status"] != "True"
        ):
            return False
    return True


def test_a_throttled_or_failing_kms_is_waited_out_then_every_key_converges_once(
    stack: FaultStack, crds: ControlPlane, ledger_sessions: sessionmaker[Session]
) -> None:
    operator, namespace, tenant = stack.operator, stack.namespace, stack.tenant
    # -- every creating call of two keys per backend throttled, or failing --------------
    for proxy in stack.proxies.values():
        proxy.set_rules(
            FaultRule("throttle", 1.0, lambda call: call.mentions("throttled")),
            FaultRule("error", 1.0, lambda call: call.mentions("failing")),
        )
    started = time.monotonic()
    waiting = {f"throttled-{backend}": ("ProviderThrottled", backend) for backend in BACKENDS} | {
        f"failing-{backend}": ("ProviderUnavailable", backend) for backend in BACKENDS
    }
    for name, (_, backend) in waiting.items():
        apply(crds, key(stack, name, backend))
    for name, (reason, _) in waiting.items():
        ek = wait_not_ready(crds, name, reason, namespace=namespace, operator=operator)
        message = ready_condition(ek)["message"]
        assert ("ThrottlingException" in message or "rate-limiting" in message) == (
            reason == "ProviderThrottled"
        ), message
    # Retried with a growing delay: a pass, then 3 s, 6 s, 12 s later... never a loop.
    time.sleep(max(0.0, BACKOFF_WINDOW_S - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    # Passes start at 0, 3, 9, 21, 45 s...: at most this many within `elapsed`, fewer
    # when passes themselves take time (the AWS SDK's own retries) or the host is slow.
    most = 1 + math.floor(math.log2(1 + elapsed / FIRST_RETRY_S))
    counts = {name: passes(operator, namespace, name) for name in waiting}
    assert all(2 <= n <= most for n in counts.values()), (counts, elapsed, most)
    # Nothing was made while it failed: one PENDING row per key, no KMS key.
    assert versions_by_key(ledger_sessions, tenant) == {name: [(1, "PENDING")] for name in waiting}
    assert aws_versions(stack.moto, tenant) == Counter()

    # -- then faults on a random share of every call: all converge, each once ------------
    share = SHARE / 3

    def waited_already(call: Call) -> bool:  # those keys' backoff has grown: spare them
        return call.mentions("throttled") or call.mentions("failing")

    for proxy in stack.proxies.values():
        proxy.set_rules(
            FaultRule("pass", 1.0, is_provider_check),
            FaultRule("pass", 1.0, waited_already),
            FaultRule("lost_reply", 1.0, FirstCreation()),
            FaultRule("throttle", share),
            FaultRule("error", share),
            FaultRule("lost_reply", share),
            FaultRule("latency", 0.2, latency_s=0.3),
        )
    steady = {f"steady-{backend}-{i}": backend for backend in BACKENDS for i in range(KEYS)}
    names = {**{n: b for n, (_, b) in waiting.items()}, **steady}
    for name, backend in steady.items():
        apply(crds, key(stack, name, backend))
    for round_ in range(1, ROTATIONS + 1):
        for name in names:
            annotate(crds, namespace, name, rotate_requested_at=f"fault-round-{round_}")
        wait_for(
            partial(all_at_version, crds, namespace, list(names), round_ + 1),
            f"every key at version {round_ + 1}, Ready",
            operator,
            timeout=CONVERGENCE_TIMEOUT,
        )
    faults = {backend: proxy.faults() for backend, proxy in stack.proxies.items()}
    assert all(n > 0 for n in faults.values()), faults  # the random phase did inject

    last = ROTATIONS + 1
    expected = [(last, "ACTIVE")] + [(v, "ROTATED") for v in range(last - 1, 0, -1)]
    assert versions_by_key(ledger_sessions, tenant) == {name: expected for name in names}
    # Each rotate request settled exactly once.
    assert handled_counts(ledger_sessions, tenant, "rotate") == {
        (name, f"fault-round-{r}"): 1 for name in names for r in range(1, ROTATIONS + 1)
    }
    # The KMS holds exactly the ledger's versions: no key or version made twice.
    aws_names = [n for n, b in names.items() if b == "aws"]
    assert aws_versions(stack.moto, tenant) == Counter(
        {(n, str(v)): 1 for n in aws_names for v in range(1, last + 1)}
    )
    refs = kms_refs(ledger_sessions, tenant)
    assert len(set(refs.values())) == len(refs)
    vault_names = [n for n, b in names.items() if b == "vault"]
    assert vault_versions(stack.bao, tenant, vault_names) == {n: last for n in vault_names}
    kubectl(crds, "delete", "ek", "--all", "-n", namespace, "--timeout=90s")

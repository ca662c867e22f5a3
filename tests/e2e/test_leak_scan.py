"""The leak scan: after every other test of the session, no credential, data key, key
material or plaintext anywhere a user or an operator's tooling can read.

This module runs last (tests/e2e/conftest.py moves `leak_scan` tests to the end of
the session). It plants canaries of its own, so that the scan means something when
it runs alone: keys on the local provider, AWS KMS (moto) and Vault (OpenBao)
created, rotated, compromised and used by the client library; providers whose
credentials Secret holds a recognisable wrong credential. Then it searches every
table of the ledger, every keyledger resource with its status, every event, the log
of every operator the session started and the shared operator's /metrics for those
canaries and for every needle other tests registered (`planted_needles`).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.client import KeyledgerClient
from keyledger.client.envelope import parse
from keyledger.providers.base import BackendConfig, KeyBackend
from keyledger.providers.local.backend import LocalBackend
from keyledger.providers.local.keystore import read_keystore
from keyledger.providers.registry import open_backend
from keyledger.settings import Settings
from keyledger.store.repository import KeyLedger
from tests.contract.backends.vault import prepare_server, vault_options
from tests.fixtures_operator import (
    annotate,
    apply,
    encryption_key,
    get,
    statuses,
    tenant_namespace,
    wait_condition,
    wait_for,
    wait_not_ready,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.moto_kms import moto_kms
from tests.harness.openbao import start_openbao, stop_openbao
from tests.harness.operator import OperatorProcess
from tests.leakscan import Needles, cluster_dump, ledger_dump, metrics_text, operator_logs

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.leak_scan]

PHI = b"KLPHI MRN 0042 penicillin allergy"


@dataclass(frozen=True)
class Kms:
    """A backend as the operator's KeyProvider names it, and as a service opens it."""

    provider: dict[str, str]  # the key's providerRef
    service_view: KeyBackend


@dataclass(frozen=True)
class LeakWorld:
    namespace: str
    tenant: str
    kms: dict[str, Kms]
    canary_keys: tuple[str, ...]  # keys on providers whose Secret holds a canary


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }


def _provider(name: str, namespace: str, spec: dict[str, Any], secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "keyledger.io/v1alpha1",
        "kind": "KeyProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**spec, "credentialsRef": {"name": secret}},
    }


@pytest.fixture(scope="module")
def world(
    crds: ControlPlane,
    operator: OperatorProcess,
    local_provider: str,
    planted_needles: Needles,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LeakWorld]:
    workdir = tmp_path_factory.mktemp("leak-scan")
    tenant = f"leak-{uuid.uuid4().hex[:8]}"
    namespace = tenant_namespace(crds, f"t-leak-{uuid.uuid4().hex[:8]}", tenant)
    with ExitStack() as cleanup:
        aws = cleanup.enter_context(moto_kms(log_file=workdir / "moto.log"))
        bao = start_openbao(workdir)
        cleanup.callback(stop_openbao, bao)
        token = prepare_server(bao)
        aws_spec = {"awsKms": {"region": aws.region, "endpoint": aws.endpoint}}
        vault_spec = {"vault": vault_options(bao.address)}
        aws_access = {"accessKeyId": aws.access_key_id, "secretAccessKey": aws.secret_access_key}
        # Recognisable canaries where a real credential would be: refused by the server,
        # so they travel the error paths (messages, events, logs) as well.
        aws_canary = f"KLCANARY-aws-{secrets.token_hex(12)}"
        vault_canary = f"KLCANARY-vault-{secrets.token_hex(12)}"
        for label, value in (
            ("AWS secret access key", aws.secret_access_key),
            ("AWS access key id", aws.access_key_id),
            ("Vault token", token),
            ("Vault root token", bao.root_token),
            ("canary AWS secret access key", aws_canary),
            ("canary Vault token", vault_canary),
        ):
            planted_needles.add(label, value)
        for manifest in (
            _secret("aws", namespace, aws_access),
            _secret("vault", namespace, {"token": token}),
            _secret("aws-canary", namespace, {**aws_access, "secretAccessKey": aws_canary}),
            _secret("vault-canary", namespace, {"token": vault_canary}),
            _provider("aws", namespace, aws_spec, "aws"),
            _provider("vault", namespace, vault_spec, "vault"),
            _provider("aws-canary", namespace, aws_spec, "aws-canary"),
            _provider("vault-canary", namespace, vault_spec, "vault-canary"),
        ):
            apply(crds, manifest)
        settings = Settings(data_dir=workdir)
        kms = {
            "local": Kms(
                {"kind": "ClusterKeyProvider", "name": local_provider},
                LocalBackend(operator.keystore_dir / "tests.json"),
            ),
            "aws": Kms(
                {"kind": "KeyProvider", "name": "aws"},
                open_backend(
                    BackendConfig("leak-aws", "awsKms", aws_spec["awsKms"], aws_access), settings
                ),
            ),
            "vault": Kms(
                {"kind": "KeyProvider", "name": "vault"},
                open_backend(
                    BackendConfig("leak-vault", "vault", vault_spec["vault"], {"token": token}),
                    settings,
                ),
            ),
        }
        for view in kms.values():
            cleanup.callback(view.service_view.close)
        yield LeakWorld(namespace, tenant, kms, ("canary-aws", "canary-vault"))


def _key(world: LeakWorld, name: str, provider: dict[str, str]) -> dict[str, Any]:
    return encryption_key(
        name,
        world.namespace,
        tenant=world.tenant,
        provider=provider["name"],
        providerRef=provider,
        rollback={"window": "1h"},
    )


def _versions_are(
    sessions: sessionmaker[Session],
    tenant: str,
    key: str,
    expected: list[tuple[int, str]],
    *,
    newest_only: bool = False,
) -> bool:
    found = statuses(sessions, tenant, key)
    return (found[: len(expected)] if newest_only else found) == expected


def _drive_the_lifecycle(
    world: LeakWorld,
    crds: ControlPlane,
    operator: OperatorProcess,
    sessions: sessionmaker[Session],
    reason: str,
) -> None:
    """Create, rotate and compromise a key per backend; and two keys that wait on
    providers whose credentials are canaries."""
    for backend, kms in world.kms.items():
        apply(crds, _key(world, f"phi-{backend}", kms.provider))
    for name, provider in zip(world.canary_keys, ("aws-canary", "vault-canary"), strict=True):
        apply(crds, _key(world, name, {"kind": "KeyProvider", "name": provider}))
    for backend in world.kms:
        wait_condition(
            crds, "ek", f"phi-{backend}", "Ready", namespace=world.namespace, operator=operator
        )
        annotate(crds, world.namespace, f"phi-{backend}", rotate_requested_at="leak-rotate")
    for backend in world.kms:
        newest = [(2, "ACTIVE")]
        wait_for(
            partial(
                _versions_are, sessions, world.tenant, f"phi-{backend}", newest, newest_only=True
            ),
            f"phi-{backend} rotated",
            operator,
        )
        annotate(
            crds,
            world.namespace,
            f"phi-{backend}",
            compromised_requested_at="leak-compromise",
            compromise_reason=reason,
        )
    for backend in world.kms:
        replaced = [(3, "ACTIVE"), (2, "COMPROMISED"), (1, "ROTATED")]
        wait_for(
            partial(_versions_are, sessions, world.tenant, f"phi-{backend}", replaced),
            f"phi-{backend} compromised and replaced",
            operator,
        )
    for name in world.canary_keys:
        wait_not_ready(crds, name, "ProviderNotReady", namespace=world.namespace, operator=operator)


def _use_the_client(
    world: LeakWorld, database: str, sessions: sessionmaker[Session], needles: Needles
) -> None:
    """Encrypt and decrypt with every backend; the data keys used become needles."""
    for backend, kms in world.kms.items():
        with KeyledgerClient(database, [kms.service_view], version_check_s=0) as client:
            blob = client.encrypt(world.tenant, f"phi-{backend}", PHI, {"row": "42"})
            assert client.decrypt(blob, {"row": "42"}, tenant=world.tenant) == PHI
        envelope = parse(blob)
        with sessions() as session:
            record = KeyLedger(session).get(envelope.key_id)
        assert record is not None and record.kms_key_id is not None
        data_key = kms.service_view.unwrap_data_key(record.kms_key_id, envelope.wrapped_key)
        assert len(data_key) == 32
        needles.add(f"{backend} data key", data_key)
        needles.add(f"{backend} wrapped data key", envelope.wrapped_key)
        needles.add(f"{backend} ciphertext", bytes(blob))
    needles.add("plaintext", PHI)


def _local_key_material(operator: OperatorProcess, tenant: str) -> list[bytes]:
    """The software keys the local provider made for `tenant` (read through read_keystore)."""
    import base64  # noqa: PLC0415  # only this reader decodes the keystore

    found = []
    for path in operator.keystore_dir.glob("*.json"):
        for entry in read_keystore(path).values():
            if entry.get("labels", {}).get("tenant") == tenant:
                found.append(base64.b64decode(entry["material"]))
    return found


def test_no_credential_key_or_plaintext_anywhere_after_the_suite(
    world: LeakWorld,
    crds: ControlPlane,
    operator: OperatorProcess,
    operator_database: str,
    ledger_sessions: sessionmaker[Session],
    planted_needles: Needles,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    reason = f"KLREASON-{secrets.token_hex(6)}: laptop with the key's export stolen"
    _drive_the_lifecycle(world, crds, operator, ledger_sessions, reason)
    _use_the_client(world, operator_database, ledger_sessions, planted_needles)
    material = _local_key_material(operator, world.tenant)
    assert len(material) == 3  # v1, v2 and v3 of phi-local
    for number, key in enumerate(material):
        planted_needles.add(f"local key material {number}", key)

    places = {
        "ledger tables": ledger_dump(ledger_sessions),
        **cluster_dump(crds),
        **operator_logs([tmp_path_factory.getbasetemp()]),
        "/metrics": metrics_text(operator),
    }
    # The places hold what they should, so that finding nothing there means something.
    shared_log = f"log {operator.log_path}"
    assert shared_log in places, sorted(places)
    assert reason in places["ledger tables"]  # audit details are in the dump
    for backend in world.kms:
        ek = get(crds, "ek", f"phi-{backend}", world.namespace)
        ref = ek["status"]["kmsKeyRef"]
        assert ref in places["ledger tables"] and ref in places["kubectl get ek,kp,ckp -A"]
    assert (
        "KeyCompromised" in places["kubectl get events -A"]
        or "Compromised" in (places["kubectl get events -A"])
    )
    assert "keyledger_" in places["/metrics"]
    canary_messages = [
        c["message"]
        for name in world.canary_keys
        for c in get(crds, "ek", name, world.namespace)["status"]["conditions"]
        if c["type"] == "Ready"
    ]
    assert all("credentials" in m.lower() for m in canary_messages), len(canary_messages)

    found = planted_needles.found_in(places)
    assert found == []

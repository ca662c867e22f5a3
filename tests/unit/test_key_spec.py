"""A bad EncryptionKey spec is refused with InvalidSpec naming the field and its fix."""

from __future__ import annotations

import re
from typing import Any

import pytest

from keyledger.errors import InvalidSpec
from keyledger.lifecycle.spec import DeletionPolicy, DesiredState, KeySpec

VALID: dict[str, Any] = {
    "tenant": "acme",
    "keyType": "PHI_DATA",
    "providerRef": {"kind": "ClusterKeyProvider", "name": "aws"},
}
ABSENT = object()  # the field left out of the spec, not set to null
PROVIDER_REF = "{kind: ClusterKeyProvider or KeyProvider, name: <provider name>}"
KEY_TYPES = "PHI_DATA, PII_DATA, FINANCIAL, CLINICAL, AUDIT_LOG, BACKUP, COMMUNICATION"


def _refusal(spec: dict[str, Any]) -> str:
    with pytest.raises(InvalidSpec) as raised:
        KeySpec.from_resource("phi", spec)
    return raised.value.message


@pytest.mark.parametrize(
    ("field", "value", "names"),
    [
        ("state", "Paused", ["spec.state", "'Paused'", "Active, Inactive"]),
        ("state", None, ["spec.state", "Active, Inactive"]),
        (
            "deletionPolicy",
            "Delete",
            ["spec.deletionPolicy", "'Delete'", "Retain, Disable, ScheduleDeletion"],
        ),
        ("deletionWindowDays", "thirty", ["spec.deletionWindowDays", "'thirty'", "7 to 30"]),
        ("deletionWindowDays", 6, ["spec.deletionWindowDays", "6", "7 to 30"]),
        ("deletionWindowDays", 31, ["spec.deletionWindowDays", "31", "7 to 30"]),
        ("deletionWindowDays", 7.5, ["spec.deletionWindowDays", "7.5", "whole number"]),
        ("deletionWindowDays", True, ["spec.deletionWindowDays", "True", "7 to 30"]),
        ("keyType", "SECRETS", ["spec.keyType", "'SECRETS'", KEY_TYPES]),
        ("keyType", ABSENT, ["spec.keyType", "missing", KEY_TYPES]),
        ("tenant", ABSENT, ["spec.tenant", "missing", "required"]),
        ("tenant", "", ["spec.tenant", "''", "required"]),
        ("tenant", 7, ["spec.tenant", "7", "required"]),
        ("providerRef", ABSENT, ["spec.providerRef", "missing", PROVIDER_REF]),
        ("providerRef", "aws", ["spec.providerRef", "'aws'", PROVIDER_REF]),
        (
            "providerRef",
            {"kind": "SecretStore", "name": "aws"},
            ["spec.providerRef.kind", "'SecretStore'", "ClusterKeyProvider, KeyProvider"],
        ),
        (
            "providerRef",
            {"name": "aws"},
            ["spec.providerRef.kind", "missing", "ClusterKeyProvider, KeyProvider"],
        ),
        (
            "providerRef",
            {"kind": "KeyProvider"},
            ["spec.providerRef.name", "missing", "required"],
        ),
    ],
)
def test_a_bad_value_names_its_field_and_the_allowed_values(
    field: str, value: object, names: list[str]
) -> None:
    spec = {**VALID, field: value}
    if value is ABSENT:
        del spec[field]
    message = _refusal(spec)
    for expected in names:
        assert expected in message, f"{expected!r} not in {message!r}"


def test_the_message_starts_with_the_field_path() -> None:
    message = _refusal({**VALID, "deletionPolicy": "Shred"})
    assert re.match(r"spec\.deletionPolicy is 'Shred': use one of ", message)


def test_valid_values_and_defaults_still_parse() -> None:
    spec = KeySpec.from_resource(
        "phi",
        {**VALID, "state": "Inactive", "deletionPolicy": "Disable", "deletionWindowDays": 7},
    )
    assert spec.state is DesiredState.INACTIVE
    assert spec.deletion_policy is DeletionPolicy.DISABLE
    assert spec.deletion_window_days == 7
    defaults = KeySpec.from_resource("phi", VALID)
    assert defaults.state is DesiredState.ACTIVE
    assert defaults.deletion_policy is DeletionPolicy.RETAIN
    assert defaults.deletion_window_days == 30

"""`kubectl keyledger status|history` as data and tables, from resource bodies."""

from __future__ import annotations

from typing import Any

from keyledger.cli.show import history_of, render_history, render_status, status_row

KEY: dict[str, Any] = {
    "metadata": {"namespace": "tenant-acme", "name": "phi", "uid": "u-1"},
    "spec": {"tenant": "acme"},
    "status": {
        "phase": "ACTIVE",
        "version": 2,
        "nextRotationAt": "2027-01-01T00:00:00Z",
        "rollbackExpiresAt": "2026-12-08T00:00:00Z",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Active"},
            {"type": "RollbackAvailable", "status": "True", "reason": "Rotated"},
            {"type": "Drifted", "status": "False", "reason": "InSync"},
        ],
        "versions": [
            {"version": 2, "phase": "ACTIVE", "kmsKeyRef": "local:x/2"},
            {"version": 1, "phase": "ROTATED", "kmsKeyRef": "local:x/1", "rotatedAt": "t1"},
        ],
    },
}


def test_status_row_names_the_true_conditions_and_the_ready_reason() -> None:
    row = status_row(KEY)
    assert (row["phase"], row["version"], row["ready"]) == ("ACTIVE", 2, "True")
    assert row["conditions"] == ["RollbackAvailable"]
    not_ready = {
        **KEY,
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "X"}]},
    }
    table = render_status([status_row(not_ready)], all_namespaces=True)
    header, line = table.splitlines()
    assert header.split()[:2] == ["NAMESPACE", "NAME"]
    assert "False (X)" in line and line.split()[0] == "tenant-acme"


def test_history_keeps_this_resources_events_oldest_first() -> None:
    events = [
        {
            "involvedObject": {"uid": "u-1"},
            "reason": "Rotated",
            "type": "Normal",
            "lastTimestamp": "2026-11-29T10:00:05+00:00",
            "message": "version 2 is ACTIVE",
        },
        {
            "involvedObject": {"uid": "u-1"},
            "reason": "Activated",
            "type": "Normal",
            "lastTimestamp": "2026-11-29T10:00:00+00:00",
            "message": "version 1",
        },
        # A deleted resource of the same name: not this key's history.
        {
            "involvedObject": {"uid": "u-0"},
            "reason": "Deleted",
            "type": "Normal",
            "lastTimestamp": "2026-11-29T09:00:00+00:00",
            "message": "old",
        },
    ]
    history = history_of(KEY, events)
    assert [e["reason"] for e in history["events"]] == ["Activated", "Rotated"]
    assert history["events"][0]["time"] == "2026-11-29T10:00:00Z"
    assert [(v["version"], v["phase"]) for v in history["versions"]] == [
        (2, "ACTIVE"),
        (1, "ROTATED"),
    ]
    assert "EVENTS" in render_history(history)
    assert "no events" in render_history(history_of(KEY, []))

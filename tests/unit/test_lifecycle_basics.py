"""Pure lifecycle pieces: durations, spec reading, conditions, status."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyledger.domain import KeyStatus
from keyledger.errors import InvalidSpec
from keyledger.lifecycle.conditions import READY, Condition, merge_conditions, rfc3339
from keyledger.lifecycle.durations import format_duration, parse_duration
from keyledger.lifecycle.spec import DeletionPolicy, KeySpec, ProviderKind
from keyledger.lifecycle.status import VERSION_HISTORY_LIMIT, build_status, key_id_text
from keyledger.lifecycle.versions import KeyVersion

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5), ("90d", 90 * 86400), ("1h30m", 5400), ("12h", 43200), ("1d1s", 86401)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text, "spec.rotation.period") == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "90", "d", "1w", "-5s", "1.5h", "0s", "90 d"])
def test_bad_duration_names_the_field(text: str) -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.rotation\.period"):
        parse_duration(text, "spec.rotation.period")


@given(
    st.datetimes(
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=2)), timezone(-timedelta(minutes=90)), None]
        )
    )
)
def test_rfc3339_spells_every_moment_as_isoformat_would(moment: datetime) -> None:
    # UTC moments take a faster path; the spelling must not change.
    assert rfc3339(moment) == moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def test_rfc3339_spells_an_instant_in_the_zone_it_is_given() -> None:
    """UTC spellings are kept; the same instant in another zone is not one of them."""
    moment = datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC)
    assert rfc3339(moment) == "2026-11-30T12:00:05Z"
    east = moment.astimezone(timezone(timedelta(hours=2)))
    assert east == moment and rfc3339(east) == "2026-11-30T14:00:05+02:00"
    assert rfc3339(moment) == "2026-11-30T12:00:05Z"


def test_a_version_id_is_spelled_as_str_spells_it_while_remembered_and_after() -> None:
    """Version ids' text is remembered by number, a bounded number of them."""
    ids = [uuid.UUID(int=n) for n in range(1, 5000)] + [uuid.uuid4() for _ in range(100)]
    for key_id in ids + ids[:10]:  # past the bound, then ones it forgot
        assert key_id_text(key_id.int) == str(key_id)
    kept = key_id_text.cache_info()
    assert kept.maxsize is not None and kept.currsize <= kept.maxsize


@given(st.integers(min_value=1, max_value=10**8))
def test_format_then_parse_round_trips(seconds: int) -> None:
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta), "x") == delta


def _spec(**extra: object) -> KeySpec:
    return KeySpec.from_resource(
        "phi-primary",
        {
            "tenant": "acme",
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "aws"},
            **extra,
        },
    )


def test_spec_defaults() -> None:
    spec = _spec()
    assert spec.key_name == "phi-primary"
    assert spec.provider_ref.kind is ProviderKind.CLUSTER
    assert spec.deletion_policy is DeletionPolicy.RETAIN
    assert spec.rollback_window == timedelta(days=7)
    assert spec.rotation_period is None
    assert spec.expiry_for(T0) is None


def test_spec_expiry_after_and_at() -> None:
    assert _spec(expiry={"after": "30d"}).expiry_for(T0) == T0 + timedelta(days=30)
    fixed = _spec(expiry={"at": "2027-01-31T00:00:00Z"})
    assert fixed.expiry_for(T0) == datetime(2027, 1, 31, tzinfo=UTC)


def test_spec_without_timezone_is_refused() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.expiry\.at.*timezone"):
        _spec(expiry={"at": "2027-01-31T00:00:00"})


def test_spec_missing_required_fields_says_which() -> None:
    with pytest.raises(InvalidSpec, match="tenant"):
        KeySpec.from_resource(
            "x", {"keyType": "PHI_DATA", "providerRef": {"kind": "KeyProvider", "name": "p"}}
        )


def test_merge_keeps_transition_time_while_status_holds() -> None:
    first = merge_conditions(
        None, [Condition(READY, True, "KeyActive", "v1")], generation=1, now=T0
    )
    later = T0 + timedelta(hours=1)
    same = merge_conditions(
        first, [Condition(READY, True, "KeyActive", "v2")], generation=2, now=later
    )
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["message"] == "v2" and same[0]["observedGeneration"] == 2
    flipped = merge_conditions(
        same, [Condition(READY, False, "KeyExpired", "gone")], generation=2, now=later
    )
    assert flipped[0]["status"] == "False"
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T01:00:00Z"


def _version(n: int, status: KeyStatus) -> KeyVersion:
    return KeyVersion(
        id=uuid.uuid4(),
        version=n,
        status=status,
        kms_key_id=f"kms-{n}",
        activated_at=T0,
    )


def test_status_reports_active_version_and_bounded_history() -> None:
    versions = [_version(n, KeyStatus.ROTATED) for n in range(15, 1, -1)]
    versions.insert(0, _version(16, KeyStatus.ACTIVE))
    versions[0] = replace(versions[0], parent_id=versions[1].id)
    view = build_status(_spec(), versions, "ClusterKeyProvider aws (awsKms)", T0)
    assert view.fields["phase"] == "ACTIVE" and view.fields["version"] == 16
    assert view.fields["previousVersion"]["version"] == 15
    assert len(view.fields["versions"]) == VERSION_HISTORY_LIMIT
    assert view.conditions[0] == Condition(
        READY, True, "KeyActive", "version 16 is ACTIVE in ClusterKeyProvider aws (awsKms)"
    )
    # Version 15 was never given a rollback window in this history.
    assert view.conditions[2].reason == "RollbackWindowClosed"


def test_status_of_pending_key_is_not_ready() -> None:
    view = build_status(_spec(), [_version(1, KeyStatus.PENDING)], "p", T0)
    assert view.conditions[0].status is False
    assert view.conditions[0].reason == "Creating"


def test_a_paused_key_has_nothing_due() -> None:
    spec = _spec(rotation={"period": "1d"})
    versions = [_version(1, KeyStatus.ACTIVE)]
    now = T0 + timedelta(hours=12)
    running = build_status(spec, versions, "p", now)
    assert running.next_due == T0 + timedelta(days=1)
    paused = build_status(spec, versions, "p", now, paused=True)
    assert paused.next_due is None
    (condition,) = [c for c in paused.conditions if c.type == "Paused"]
    assert condition.status is True and "keyledger.io/paused" in condition.message


def test_the_default_rollback_window_is_shorter_than_the_rotation_period() -> None:
    assert _spec(rotation={"period": "90d"}).rollback_window == timedelta(days=7)
    assert _spec(rotation={"period": "2d"}).rollback_window == timedelta(days=1)
    assert _spec(rotation={"period": "2d"}, rollback={"window": "3h"}).rollback_window == (
        timedelta(hours=3)
    )


def _drive(spec: KeySpec, until: datetime) -> list[KeyVersion]:
    """The planner's actions applied in memory, a pass every minute until `until`."""
    from keyledger.lifecycle.plan import plan_next  # noqa: PLC0415
    from keyledger.lifecycle.requests import Requests  # noqa: PLC0415
    from keyledger.lifecycle.transitions import apply_in_memory, changes_for  # noqa: PLC0415

    versions: list[KeyVersion] = []
    now = T0
    while now <= until:
        for _ in range(20):
            action = plan_next(spec, versions, Requests(), now)
            if action is None:
                break
            changes = changes_for(action, versions, spec, now, f"ref-{len(versions)}-{now}")
            versions = apply_in_memory(versions, changes, now)
        else:
            raise AssertionError(f"the planner never settled at {now}: {versions}")
        now += timedelta(minutes=1)
    return versions


def test_a_fixed_expiry_time_ends_the_key_instead_of_making_versions_until_it() -> None:
    """`expiry.at` is when the key's use ends: every version would expire then, so the
    planner neither rotates early nor replaces the expired version (it used to, in a
    loop that made a new version on every pass)."""
    end = T0 + timedelta(hours=2)
    spec = _spec(rotation={"period": "1h"}, expiry={"at": end.isoformat()})
    versions = _drive(spec, until=end + timedelta(minutes=30))
    assert [(v.version, v.status) for v in versions] == [
        (2, KeyStatus.EXPIRED),
        (1, KeyStatus.EXPIRED),
    ]


def test_compromising_the_version_rolled_back_to_rotates_in_a_new_one() -> None:
    """rotate, roll back, then compromise version 1: the INACTIVE version 2 (rolled
    back away from) is not brought back; a new version 3 replaces version 1."""
    from keyledger.lifecycle.actions import CreateVersion, Trigger  # noqa: PLC0415
    from keyledger.lifecycle.plan import plan_next  # noqa: PLC0415
    from keyledger.lifecycle.requests import Requests  # noqa: PLC0415

    v1 = replace(_version(1, KeyStatus.COMPROMISED), activated_at=T0 + timedelta(hours=2))
    v2 = replace(
        _version(2, KeyStatus.INACTIVE), activated_at=T0 + timedelta(hours=1), parent_id=v1.id
    )
    action = plan_next(_spec(), [v2, v1], Requests(), T0 + timedelta(hours=3))
    assert action == CreateVersion(Trigger.REPLACE_COMPROMISED, v1)

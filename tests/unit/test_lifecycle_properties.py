"""Property tests of the pure lifecycle: planner + transitions on an in-memory ledger.

Random histories of time passing, annotation requests and spec.state flips; after
every single ledger change the invariants must hold.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.domain import KeyStatus
from keyledger.lifecycle.actions import Change, CreateVersion, FinishPending, Rollback
from keyledger.lifecycle.plan import plan_next
from keyledger.lifecycle.requests import Requests
from keyledger.lifecycle.spec import DesiredState, KeySpec
from keyledger.lifecycle.states import TERMINAL, TRANSITIONS
from keyledger.lifecycle.transitions import apply_in_memory, changes_for
from keyledger.lifecycle.versions import KeyVersion, by_id

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MAX_STEPS = 30

steps = st.lists(
    st.one_of(
        st.tuples(st.just("wait"), st.integers(min_value=1, max_value=400)),
        st.tuples(st.just("rotate"), st.none()),
        st.tuples(st.just("rollback"), st.none()),
        st.tuples(st.just("compromise"), st.none()),
        st.tuples(st.just("state"), st.sampled_from(list(DesiredState))),
    ),
    max_size=25,
)
specs = st.builds(
    lambda rotation, window, expiry: KeySpec.from_resource(
        "k",
        {
            "tenant": "acme",
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "p"},
            **({"rotation": {"period": f"{rotation}s"}} if rotation else {}),
            "rollback": {"window": f"{window}s"},
            **({"expiry": {"after": f"{expiry}s", "warnBefore": "10s"}} if expiry else {}),
        },
    ),
    st.one_of(st.none(), st.integers(min_value=30, max_value=300)),
    st.integers(min_value=1, max_value=200),
    st.one_of(st.none(), st.integers(min_value=50, max_value=600)),
)


def _assert_invariants(before: list[KeyVersion], after: list[KeyVersion]) -> None:
    assert sum(v.status is KeyStatus.ACTIVE for v in after) <= 1, "two ACTIVE versions"
    for old in before:
        new = by_id(after, old.id)
        assert new is not None, "a version disappeared from the ledger"
        if new.status is not old.status:
            assert new.status in TRANSITIONS[old.status]
            assert old.status not in TERMINAL
    numbers = [v.version for v in after]
    assert len(numbers) == len(set(numbers)), "duplicate version numbers"


def _settle(
    spec: KeySpec,
    versions: list[KeyVersion],
    requests: Requests,
    now: datetime,
    kms_refs: itertools.count[int],
) -> list[KeyVersion]:
    """Run the planner until it has nothing to do, checking every change."""
    for _ in range(MAX_STEPS):
        action = plan_next(spec, versions, requests, now)
        if action is None:
            return versions
        if isinstance(action, Rollback):
            target = action.target
            assert target.status is KeyStatus.ROTATED
            assert target.can_rollback
            assert target.rollback_expires_at is not None and target.rollback_expires_at > now
        ref = f"kms-{next(kms_refs)}" if isinstance(action, FinishPending) else None
        changes = changes_for(action, versions, spec, now, ref)
        for change in changes:
            if isinstance(change, Change) and change.to_status is KeyStatus.ACTIVE:
                old = by_id(versions, change.version_id)
                assert old is not None and old.status is not KeyStatus.COMPROMISED
        # Row by row, as the database sees them inside the transaction.
        for change in changes:
            after = apply_in_memory(versions, [change], now)
            _assert_invariants(versions, after)
            versions = after
        # A handled request is recorded with the change; the next plan must not see it.
        handled = {c.details.get("request") for c in changes if isinstance(c, Change)}
        if isinstance(action, CreateVersion) and action.request_token:
            handled.add("rotate")
        requests = Requests(
            rotate=None if "rotate" in handled else requests.rotate,
            rollback=None if "rollback" in handled else requests.rollback,
            compromise=None if "compromise" in handled else requests.compromise,
            compromise_reason=requests.compromise_reason,
        )
    raise AssertionError(f"planner did not settle in {MAX_STEPS} steps: {versions}")


@settings(max_examples=300, deadline=None)
@given(spec=specs, history=steps)
def test_lifecycle_invariants_hold_for_any_history(
    spec: KeySpec, history: list[tuple[str, object]]
) -> None:
    now = T0
    kms_refs = itertools.count(1)
    versions = _settle(spec, [], Requests(), now, kms_refs)
    for n, (kind, value) in enumerate(history):
        requests = Requests()
        if kind == "wait":
            assert isinstance(value, int)
            now += timedelta(seconds=value)
        elif kind == "state":
            assert isinstance(value, DesiredState)
            spec = replace(spec, state=value)
        elif kind == "rotate":
            requests = Requests(rotate=f"r{n}")
        elif kind == "rollback":
            requests = Requests(rollback=f"b{n}")
        else:
            requests = Requests(compromise=f"c{n}", compromise_reason="leaked")
        versions = _settle(spec, versions, requests, now, kms_refs)
        active = [v for v in versions if v.status is KeyStatus.ACTIVE]
        current_expired = not active and any(v.status is KeyStatus.EXPIRED for v in versions)
        if spec.state is DesiredState.ACTIVE and not current_expired:
            assert len(active) == 1, f"no ACTIVE version after settling: {versions}"
        if spec.state is DesiredState.INACTIVE:
            assert active == []
        if spec.rotation_period is not None and spec.state is DesiredState.ACTIVE:
            assert len(active) == 1, "with rotation on, an expired key is replaced"


def _spec_with_rollback_window(window: str) -> KeySpec:
    return KeySpec.from_resource(
        "k",
        {
            "tenant": "acme",
            "keyType": "PHI_DATA",
            "providerRef": {"kind": "ClusterKeyProvider", "name": "p"},
            "rollback": {"window": window},
        },
    )


def test_compromised_version_is_never_rolled_back_to() -> None:
    spec = _spec_with_rollback_window("1h")
    refs = itertools.count(1)
    versions = _settle(spec, [], Requests(), T0, refs)
    versions = _settle(spec, versions, Requests(compromise="c1", compromise_reason="x"), T0, refs)
    assert [v.status for v in versions] == [KeyStatus.ACTIVE, KeyStatus.COMPROMISED]
    action = plan_next(spec, versions, Requests(rollback="b1"), T0)
    assert action is not None and not isinstance(action, Rollback)
    assert getattr(action, "reason", None) == "PreviousVersionCompromised"


def test_rollback_outside_the_window_is_refused() -> None:
    spec = _spec_with_rollback_window("60s")
    refs = itertools.count(1)
    versions = _settle(spec, [], Requests(), T0, refs)
    versions = _settle(spec, versions, Requests(rotate="r1"), T0, refs)
    inside = plan_next(spec, versions, Requests(rollback="b1"), T0 + timedelta(seconds=59))
    assert isinstance(inside, Rollback)
    outside = plan_next(spec, versions, Requests(rollback="b1"), T0 + timedelta(seconds=61))
    assert getattr(outside, "reason", None) == "RollbackWindowClosed"

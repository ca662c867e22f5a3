"""The executor carries out every action the planner can return, each as the action
itself defines it: its ledger rows, its audit rows and its events.

A key is driven through its whole life (create, rotate, roll back, close the
window, deactivate and reactivate, refuse, compromise, expire) with the real
executor, the SQLite ledger and the local backend. Every executed action is
checked against its own definition, and the set of executed action types must be
exactly the `Action` union: a new action type fails this test until a scenario
here reaches it.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from keyledger.api import (
    COMPROMISE_REASON,
    COMPROMISED_REQUESTED_AT,
    ROLLBACK_REQUESTED_AT,
    ROTATE_REQUESTED_AT,
)
from keyledger.domain import KeyStatus
from keyledger.lifecycle.actions import Action, Change, NewVersion, Notice
from keyledger.lifecycle.spec import KeySpec
from keyledger.lifecycle.transitions import apply_in_memory
from keyledger.lifecycle.versions import KeyVersion
from keyledger.operations.keys import KeyOperations
from keyledger.operations.outcome import Outcome
from keyledger.operations.views import KeyResource, Written, to_version
from keyledger.providers.base import KeyBackend, KmsKeyState
from keyledger.providers.local.backend import LocalBackend
from keyledger.store.engine import make_engine, make_session_factory, upgrade_database
from keyledger.store.repository import KeyLedger, Transition

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Executed:
    action: Action
    before: list[KeyVersion]
    after: list[KeyVersion]
    events: list[Notice]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade_database(url)
    return make_session_factory(make_engine(url))


@pytest.fixture
def recorded(
    sessions: sessionmaker[Session], tmp_path: Path
) -> Iterator[tuple[KeyOperations, KeyBackend, Clock, list[Executed]]]:
    clock = Clock()
    operations = KeyOperations(sessions, actor="test", clock=clock)
    executed: list[Executed] = []
    real_execute = operations.executor.execute

    def execute(
        action: Action,
        versions: Sequence[KeyVersion],
        key: KeyResource,
        backend: KeyBackend,
        why: Transition,
        outcome: Outcome,
    ) -> Written:
        seen = len(outcome.events)
        written = real_execute(action, versions, key, backend, why, outcome)
        with sessions() as session:
            after = [to_version(r) for r in KeyLedger(session).versions("acme", "records")]
        # The pass plans its next action over what the executor says it wrote, without
        # reading the ledger again: that must be the rows exactly as committed.
        for version in written.versions:
            assert version in after, f"{version} is not as committed: {after}"
        executed.append(Executed(action, list(versions), after, outcome.events[seen:]))
        return written

    operations.executor.execute = execute  # type: ignore[method-assign]  # recording spy
    yield operations, LocalBackend(tmp_path / "keys.json"), clock, executed


def _key(spec: Mapping[str, object], annotations: Mapping[str, str]) -> KeyResource:
    full = {
        "tenant": "acme",
        "keyName": "records",
        "keyType": "PHI_DATA",
        "providerRef": {"kind": "ClusterKeyProvider", "name": "local"},
        "rollback": {"window": "1d"},
        "expiry": {"after": "30d"},
        **spec,
    }
    return KeyResource(
        "uid-1", "tenant-acme", "phi", 1, KeySpec.from_resource("phi", full), annotations
    )


def test_the_executor_carries_out_every_action_type_as_the_action_defines_it(
    recorded: tuple[KeyOperations, KeyBackend, Clock, list[Executed]],
) -> None:
    operations, backend, clock, executed = recorded
    annotations: dict[str, str] = {}

    def reconcile(**spec: object) -> None:
        operations.reconcile(_key(spec, annotations), backend, "local")

    def later(delta: timedelta) -> None:
        clock.now += delta

    reconcile()  # CreateVersion, FinishPending
    annotations[ROTATE_REQUESTED_AT] = "r1"
    reconcile()  # CreateVersion (request), FinishPending
    annotations[ROLLBACK_REQUESTED_AT] = "b1"
    reconcile()  # Rollback
    annotations[ROTATE_REQUESTED_AT] = "r2"
    reconcile()
    later(timedelta(days=2))
    reconcile()  # CloseRollbackWindow
    annotations[ROLLBACK_REQUESTED_AT] = "b2"
    reconcile()  # RefuseRequest: the window is closed
    reconcile(state="Inactive")  # Deactivate
    reconcile(state="Active")  # Reactivate
    annotations[COMPROMISED_REQUESTED_AT] = "c1"
    annotations[COMPROMISE_REASON] = "found in a public repository"
    reconcile()  # Compromise, then CreateVersion (replace), FinishPending
    later(timedelta(days=31))
    reconcile()  # Expire

    kinds = {type(step.action) for step in executed}
    assert kinds == set(typing.get_args(Action)), "a planner action type was never executed"

    spec = _key({}, {}).spec
    for step in executed:
        changes = step.action.changes(step.before, spec, clock.now, "ref")
        expected = apply_in_memory(step.before, changes, clock.now)
        assert [(v.version, v.status) for v in step.after] == [
            (v.version, v.status) for v in expected
        ], f"{type(step.action).__name__} changed the ledger otherwise than it defines"
        assert step.events == step.action.notices(spec), type(step.action).__name__
        if any(isinstance(c, NewVersion) for c in changes):
            assert len(step.after) == len(step.before) + 1
        assert all(
            isinstance(c, NewVersion) or any(v.id == c.version_id for v in step.after)
            for c in changes
            if isinstance(c, Change | NewVersion)
        )

    # The KMS steps happened too: the compromised version is disabled in the KMS.
    compromised = [v for v in executed[-1].after if v.status is KeyStatus.COMPROMISED]
    assert compromised and compromised[0].kms_key_id is not None
    assert backend.describe(compromised[0].kms_key_id).state is not KmsKeyState.ENABLED


def test_each_request_token_is_acted_on_once(
    recorded: tuple[KeyOperations, KeyBackend, Clock, list[Executed]],
) -> None:
    operations, backend, _, executed = recorded
    annotations = {ROTATE_REQUESTED_AT: "r1"}
    key = _key({}, annotations)
    operations.reconcile(key, backend, "local")
    made = len(executed)
    for _ in range(3):
        outcome = operations.reconcile(key, backend, "local")
        assert outcome.status["lastHandledRequests"] == {"rotate": "r1"}
    assert len(executed) == made  # the token is recorded: nothing more to do
    long_token = replace(key, annotations={ROTATE_REQUESTED_AT: "t" * 500})
    operations.reconcile(long_token, backend, "local")
    operations.reconcile(long_token, backend, "local")
    assert len(executed) == made + 2  # one rotation (create + finish), not two

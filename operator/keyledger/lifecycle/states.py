"""The version state machine: which ledger status may follow which."""

from __future__ import annotations

from keyledger.domain import KeyStatus

S = KeyStatus

# Every transition the lifecycle makes. Anything else is a bug the ledger refuses.
TRANSITIONS: dict[KeyStatus, frozenset[KeyStatus]] = {
    S.PENDING: frozenset({S.ACTIVE}),
    # rotated away, disabled by spec.state or rolled back from, expired, compromised
    S.ACTIVE: frozenset({S.ROTATED, S.INACTIVE, S.EXPIRED, S.COMPROMISED}),
    # enabled again (spec.state) , expired, compromised
    S.INACTIVE: frozenset({S.ACTIVE, S.EXPIRED, S.COMPROMISED}),
    # rolled back to, expired, compromised
    S.ROTATED: frozenset({S.ACTIVE, S.EXPIRED, S.COMPROMISED}),
    # An expired version can still be found to be compromised; nothing else.
    S.EXPIRED: frozenset({S.COMPROMISED}),
    S.COMPROMISED: frozenset(),
}

TERMINAL = frozenset(s for s, targets in TRANSITIONS.items() if not targets)


class IllegalTransition(Exception):
    """A transition the state machine does not allow; a bug, never a user error."""


def check_transition(before: KeyStatus, after: KeyStatus) -> None:
    if after not in TRANSITIONS[before]:
        raise IllegalTransition(f"a key version cannot go from {before.value} to {after.value}")

"""What an operation wants the user to see: status fields, conditions, events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from keyledger.lifecycle.conditions import Condition


@dataclass(frozen=True)
class UserEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    events: list[UserEvent] = field(default_factory=list)
    # When the key next needs a scheduled pass; set whenever the status was built.
    next_due: datetime | None = None
    scheduled: bool = False

    def note(self, reason: str, message: str) -> None:
        self.events.append(UserEvent("Normal", reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.events.append(UserEvent("Warning", reason, message))

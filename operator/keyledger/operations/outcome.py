"""What an operation wants the user to see: status fields, conditions, events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keyledger.lifecycle.actions import Notice
from keyledger.lifecycle.actions.base import note, warn
from keyledger.lifecycle.conditions import Condition


@dataclass
class Outcome:
    status: dict[str, Any] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    events: list[Notice] = field(default_factory=list)
    # When the key next needs a scheduled pass; set whenever the status was built.
    next_due: datetime | None = None
    scheduled: bool = False

    def note(self, reason: str, message: str) -> None:
        self.events.append(note(reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.events.append(warn(reason, message))

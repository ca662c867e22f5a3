"""Who asked for what: the requester record the admission webhook keeps on a key.

The record lives in the `keyledger.io/requesters` annotation. On every create and
update the webhook rebuilds it from the *stored* object's record and the
admission request's user: an item whose subject changed (the spec, a request
token, the pause flag) gets the requesting user; the others keep what the
stored object had. Whatever a user writes into the annotation is discarded.

The operator then attributes each action to the user recorded for its subject,
provided the record matches what it acts on (the spec digest, the request
token). A change that reached the API server without the webhook carries a
record that does not match, and is audited as unattributed, never as the
operator.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyledger.api import REQUESTERS
from keyledger.lifecycle.actions.base import RequestKind
from keyledger.lifecycle.requests import is_paused, request_tokens

UNATTRIBUTED = "unattributed: changed without the admission webhook"

# Record items and what each one is about.
CREATED = "created"
SPEC = "spec"
PAUSE = "paused"


@dataclass(frozen=True)
class Requester:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()

    def as_details(self) -> dict[str, Any]:
        return {"username": self.username, "uid": self.uid, "groups": list(self.groups)}

    @classmethod
    def from_userinfo(cls, userinfo: Mapping[str, Any]) -> Requester:
        return cls(
            username=str(userinfo.get("username") or ""),
            uid=str(userinfo.get("uid") or ""),
            groups=tuple(str(g) for g in userinfo.get("groups") or ()),
        )


@dataclass(frozen=True)
class RecordedItem:
    """`requester` asked for `subject` (a spec digest, a request token, "true")."""

    subject: str
    requester: Requester


def spec_digest(spec: Mapping[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def subjects(spec: Mapping[str, Any], annotations: Mapping[str, str]) -> dict[str, str]:
    """What each record item is about in an object: its spec, its request tokens, pause."""
    found = {SPEC: spec_digest(spec)}
    found.update({kind.value: token for kind, token in request_tokens(annotations).items()})
    if is_paused(annotations):
        found[PAUSE] = "true"
    return found


def read_record(annotations: Mapping[str, str]) -> dict[str, RecordedItem]:
    """The record in `annotations`; an unreadable one reads as empty (unattributed)."""
    raw = annotations.get(REQUESTERS)
    if not raw:
        return {}
    try:
        document = json.loads(raw)
        return {
            item: RecordedItem(
                subject=str(entry["subject"]),
                requester=Requester(
                    username=str(entry["username"]),
                    uid=str(entry.get("uid", "")),
                    groups=tuple(str(g) for g in entry.get("groups") or ()),
                ),
            )
            for item, entry in document.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def write_record(record: Mapping[str, RecordedItem]) -> str:
    return json.dumps(
        {
            item: {"subject": entry.subject, **entry.requester.as_details()}
            for item, entry in sorted(record.items())
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def admitted_record(
    stored: tuple[Mapping[str, Any], Mapping[str, str]] | None,
    incoming: tuple[Mapping[str, Any], Mapping[str, str]],
    requester: Requester,
) -> str:
    """The record to store with `incoming` (spec, annotations), written by `requester`.

    `stored` is the object as it is in the API server (None on create); its record
    is the only one trusted."""
    old_record = read_record(stored[1]) if stored is not None else {}
    old_subjects = subjects(*stored) if stored is not None else {}
    record: dict[str, RecordedItem] = {}
    if stored is None:
        record[CREATED] = RecordedItem("create", requester)
    elif CREATED in old_record:
        record[CREATED] = old_record[CREATED]
    for item, subject in subjects(*incoming).items():
        kept = old_record.get(item)
        if old_subjects.get(item) == subject and kept is not None and kept.subject == subject:
            record[item] = kept
        else:
            record[item] = RecordedItem(subject, requester)
    return write_record(record)


# -- attribution ------------------------------------------------------------------


@dataclass(frozen=True)
class Attribution:
    """Who an audit row names, and the requester's details when a user asked."""

    actor: str
    requester: Requester | None = None


def attribute_item(annotations: Mapping[str, str], item: str, subject: str | None) -> Attribution:
    """The user recorded for `item`, if the record is about `subject` (None: any)."""
    entry = read_record(annotations).get(item)
    if entry is None or (subject is not None and entry.subject != subject):
        return Attribution(UNATTRIBUTED)
    return Attribution(entry.requester.username, entry.requester)


def attribute_request(annotations: Mapping[str, str], kind: RequestKind, token: str) -> Attribution:
    return attribute_item(annotations, kind.value, token)

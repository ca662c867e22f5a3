"""The pass's live-version read hands its rows to lifecycle by position."""

from __future__ import annotations

from dataclasses import fields

from keyledger.lifecycle.versions import KeyVersion
from keyledger.store.repository import _LIVE_COLUMNS


def test_the_live_columns_are_the_version_fields_in_order_then_the_resource() -> None:
    names = [column.key for column in _LIVE_COLUMNS]
    assert names[:-1] == [field.name for field in fields(KeyVersion)]
    assert names[-1] == "resource_uid"

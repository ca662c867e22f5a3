"""On whose behalf an action runs: the audit row's actor and the ledger's
created_by / rotated_by, from the action's cause and the key's requester record."""

from __future__ import annotations

from typing import assert_never

from keyledger.lifecycle.actions import (
    ByCreator,
    ByOperator,
    ByRequest,
    BySpec,
    ByVersionCreator,
    Cause,
)
from keyledger.lifecycle.requesters import CREATED, SPEC, Attribution, attribute_item
from keyledger.operations.views import KeyResource


def attribute(cause: Cause, key: KeyResource, operator_actor: str) -> Attribution:
    match cause:
        case ByOperator():
            return Attribution(operator_actor)
        case ByRequest(request=request):
            return attribute_item(key.annotations, request.kind.value, request.token)
        case ByCreator():
            return attribute_item(key.annotations, CREATED, None)
        case BySpec():
            return attribute_item(key.annotations, SPEC, key.spec_digest)
        case ByVersionCreator(version=version):
            return Attribution(version.created_by or operator_actor)
        case _:
            assert_never(cause)

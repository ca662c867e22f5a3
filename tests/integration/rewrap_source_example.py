"""A caller's own rewrap source, as `keyledger rewrap --source` loads it: sealed records
kept in a JSON document (standing in for a document store or an API)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from keyledger.client.envelope import Blob
from keyledger.client.rewrap import Sealed

STORE = Path("documents.json")  # in the job's working directory


class Documents:
    def __init__(self, tenant: str, context: Mapping[str, str]) -> None:
        self.tenant = tenant
        self.context = context

    def items(self) -> Iterator[Sealed]:
        for name, blob in sorted(json.loads(STORE.read_text()).items()):
            yield Sealed(name, base64.b64decode(blob), {**self.context, "doc": name}, self.tenant)

    def replace(self, item: Sealed, blob: Blob) -> None:
        documents = json.loads(STORE.read_text())
        documents[item.id] = base64.b64encode(blob).decode()
        STORE.write_text(json.dumps(documents))


def documents(tenant: str, context: Mapping[str, str]) -> Documents:
    return Documents(tenant, context)

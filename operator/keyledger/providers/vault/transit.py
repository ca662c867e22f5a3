"""The transit engine's calls on one mount: read, create/rotate, configure, trim, delete, crypto.

Only what transit itself knows lives here; what keyledger adds on top (per-version
refusals, markers, deletion dates) is in `state`, and `backend` combines the two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import hvac

from keyledger.providers.vault.errors import crypto_refusal
from keyledger.providers.vault.names import TransitVersion
from keyledger.providers.vault.session import VaultSession

log = logging.getLogger(__name__)
KEY_TYPE = "aes256-gcm96"


@dataclass(frozen=True)
class TransitKeyInfo:
    latest: int
    min_decryption: int
    min_encryption: int
    min_available: int
    key_type: str

    def has(self, version: int) -> bool:
        return max(self.min_available, 1) <= version <= self.latest


class TransitKeys:
    """The transit keys of one mount, reached through a logged-in session."""

    def __init__(self, session: VaultSession, mount: str) -> None:
        self.session = session
        self.mount = mount

    def info(self, key: str) -> TransitKeyInfo | None:
        # Every drift check reads this: the session's lean GET, not hvac's read_key.
        response = self.session.get_json(
            f"reading transit key {self.mount}/{key}", f"/v1/{self.mount}/keys/{key}"
        )
        if response is None:
            return None
        data = response["data"]
        return TransitKeyInfo(
            latest=int(data["latest_version"]),
            min_decryption=int(data["min_decryption_version"]),
            min_encryption=int(data["min_encryption_version"]),
            min_available=int(data.get("min_available_version") or 0),
            key_type=str(data["type"]),
        )

    def configure(self, key: str, **config: int | bool) -> None:
        # hvac's update_key_configuration rejects min_encryption == min_decryption,
        # which transit allows, so the config is posted directly.
        self.session.call(
            f"configuring transit key {self.mount}/{key}",
            lambda c: c.adapter.post(f"/v1/{self.mount}/keys/{key}/config", json=config),
        )

    def make_version(self, target: TransitVersion) -> None:
        path = f"{self.mount}/keys/{target.key}"
        if target.version == 1:
            # Creating an existing key is a no-op in transit: safe on retry.
            self.session.call(
                f"creating transit key {path}",
                lambda c: c.secrets.transit.create_key(
                    target.key, key_type=KEY_TYPE, exportable=False, mount_point=self.mount
                ),
            )
        else:
            self.session.call(
                f"rotating transit key {path}",
                lambda c: c.secrets.transit.rotate_key(target.key, mount_point=self.mount),
            )

    def delete(self, key: str) -> None:
        path = f"{self.mount}/keys/{key}"
        self.configure(key, deletion_allowed=True)
        self.session.call(
            f"deleting transit key {path}",
            lambda c: c.secrets.transit.delete_key(key, mount_point=self.mount),
        )
        log.info("transit key %s deleted: every version's deletion date has passed", path)

    def trim(self, key: str, info: TransitKeyInfo, *, keep_from: int) -> None:
        # Transit trims only below both minimums, and refuses while either is 0.
        decryption = max(info.min_decryption, keep_from)
        encryption = max(info.min_encryption, decryption)
        if (decryption, encryption) != (info.min_decryption, info.min_encryption):
            self.configure(
                key, min_decryption_version=decryption, min_encryption_version=encryption
            )
        path = f"{self.mount}/keys/{key}"
        self.session.call(
            f"trimming transit key {path}",
            lambda c: c.secrets.transit.trim_key(key, keep_from, mount_point=self.mount),
        )
        log.info("versions below %d of transit key %s destroyed (trimmed)", keep_from, path)

    def crypto(
        self, target: TransitVersion, endpoint: str, body: dict[str, Any], *, what: str
    ) -> Any:
        def post(client: Any) -> Any:
            try:
                return client.adapter.post(f"/v1/{self.mount}/{endpoint}/{target.key}", json=body)
            except hvac.exceptions.InvalidRequest as error:
                raise crypto_refusal(target.ref, what, str(error)) from None

        return self.session.call(f"{what} with {target.ref}", post)

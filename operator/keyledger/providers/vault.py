"""The `vault` backend: HashiCorp Vault / OpenBao transit, through hvac.

Versions. One transit key (aes256-gcm96) per tenant key, named
`keyledger.<tenant>.<keyName>`, plus a trailing `_` when keyName ends in `_`,
`.` or `-` (transit names must end in a letter, digit or `_`; adding it only
then keeps the mapping one-to-one; the tenant is a DNS label without dots, so
the name splits back unambiguously). Ledger version N is transit version N; the
ref is `vault:<mount>/<transit key>#<N>`. `rotate` makes N+1. The ledger pins the
active version and every data key names `key_version`; `make_primary` sets the
key's `min_encryption_version` to the primary, so transit itself refuses new
data keys from older versions (a rollback lowers it again). A client that still
believes an older version is ACTIVE gets reason KmsKeyNotPrimary and should
re-read the ledger.

Disable, enable, deletion. Transit has no per-version switch. keyledger keeps
per-version state (disabled, deletion date, the creating marker) in a KV v2
mount of the same Vault, see `vault_state`, and checks it before every data-key
call. Where transit can enforce the same thing it does: when the oldest versions
are all refused, `min_decryption_version` is raised past them, so Vault refuses
them to every client, not only keyledger's. A version refused in the middle
(v2 of 1..3) is refused by keyledger alone: transit cannot express it. Vault
deletes only whole keys, so `schedule_deletion` records the date and refuses
crypto; destroying the material after the window is left to a later operator
step (trim the key, or delete it once every version is past its date).

Idempotency. `create_key_version` claims the version for the request's marker
in the state store, then creates/rotates only if transit's latest version is
below it, so a retry after a crash returns the version already made.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac

from keyledger.domain import KmsProvider
from keyledger.errors import InvalidSpec, KmsKeyNotFound, ProviderError
from keyledger.providers.base import (
    BackendConfig,
    DataKey,
    KeyVersionRequest,
    KmsKey,
    KmsKeyState,
)
from keyledger.providers.registry import register_backend
from keyledger.providers.vault_policy import KEY_PREFIX, check_access
from keyledger.providers.vault_session import SERVICE_ACCOUNT_TOKEN, VaultAuth, VaultSession
from keyledger.providers.vault_state import (
    KeyState,
    TransitStateStore,
    TransitVersionConflict,
    VersionState,
    raised_floor,
)
from keyledger.settings import Settings

KEY_TYPE = "aes256-gcm96"
_TENANT = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_REF = re.compile(r"^vault:(?P<mount>.+)/(?P<key>[A-Za-z0-9_.-]+)#(?P<version>[1-9][0-9]*)$")
_CIPHERTEXT = re.compile(r"^vault:v(?P<version>[0-9]+):[A-Za-z0-9+/=]+$")


def transit_key_name(tenant: str, key_name: str) -> str:
    if not _TENANT.match(tenant) or not _KEY_NAME.match(key_name):
        raise InvalidSpec(
            f"tenant {tenant!r} / keyName {key_name!r} cannot name a transit key: tenant must "
            "be a DNS label, keyName letters, digits, '_', '.', '-'"
        )
    terminator = "" if key_name[-1].isalnum() else "_"
    return f"{KEY_PREFIX}{tenant}.{key_name}{terminator}"


@dataclass(frozen=True)
class TransitVersion:
    """A parsed ref: version `version` of transit key `key` on `mount`."""

    mount: str
    key: str
    version: int

    @property
    def ref(self) -> str:
        return f"vault:{self.mount}/{self.key}#{self.version}"


@dataclass(frozen=True)
class _KeyInfo:
    latest: int
    min_decryption: int
    min_encryption: int
    min_available: int
    key_type: str

    def has(self, version: int) -> bool:
        return max(self.min_available, 1) <= version <= self.latest


class VaultBackend:
    provider = KmsProvider.HASHICORP_VAULT
    region: str | None = None

    def __init__(self, session: VaultSession, *, mount: str, state: TransitStateStore) -> None:
        self.session = session
        self.mount = mount
        self.state = state
        self.endpoint: str | None = session.address

    # -- the KeyBackend protocol ------------------------------------------------

    def check(self) -> None:
        check_access(self.session, self.mount, self.state.mount, self.state.path)

    def create_key_version(self, request: KeyVersionRequest) -> KmsKey:
        if request.algorithm != "AES-256-GCM" or request.version < 1:
            raise InvalidSpec(
                f"vault backend makes AES-256-GCM versions 1, 2, ...; got {request.algorithm} "
                f"version {request.version}"
            )
        target = TransitVersion(
            self.mount, transit_key_name(request.tenant, request.key_name), request.version
        )
        info = self._key_info(target.key)
        latest = info.latest if info else 0
        if info is not None and info.key_type != KEY_TYPE:
            raise TransitVersionConflict(
                f"transit key {self.mount}/{target.key} exists with type {info.key_type}, "
                f"not {KEY_TYPE}; keyledger will not use it"
            )
        if target.version > latest + 1:
            raise TransitVersionConflict(
                f"cannot create version {target.version} of transit key {self.mount}/"
                f"{target.key}: its latest version is {latest}, and versions are made one at "
                "a time. The key was probably deleted or replaced outside keyledger"
            )
        state = self.state.claim(target.key, target.version, request.marker)
        if latest < target.version:
            self._make_next_version(target)
            info = self._key_info(target.key)
        assert info is not None  # it exists now: made above or seen before
        self._raise_floor(target.key, info, state)
        return self._kms_key(target, info, state.version(target.version))

    def find_key_version(self, marker: str) -> KmsKey | None:
        found = self.state.find_marker(marker)
        if found is None:
            return None
        target = TransitVersion(self.mount, *found)
        info = self._key_info(target.key)
        version = self.state.read(target.key).version(target.version)
        # A claim whose create/rotate never happened (crash) is not a key yet.
        if info is None or not info.has(target.version) or version.marker != marker:
            return None
        return self._kms_key(target, info, version)

    def describe(self, ref: str) -> KmsKey:
        target = self._parse(ref)
        info = self._key_info(target.key)
        if info is None or not info.has(target.version):
            return KmsKey(ref=ref, state=KmsKeyState.MISSING)
        return self._kms_key(target, info, self.state.read(target.key).version(target.version))

    def make_primary(self, ref: str, request: KeyVersionRequest) -> None:
        target = self._parse(ref)
        info = self._existing(target)
        state = self.state.read(target.key)
        if state.version(target.version).deletion_date or target.version < info.min_decryption:
            raise ProviderError(
                f"{ref} cannot become the primary version: it is scheduled for deletion or "
                "blocked by min_decryption_version",
                reason="KmsKeyDisabled",
            )
        self._configure(target.key, min_encryption_version=target.version)

    def disable(self, ref: str) -> None:
        self._refuse(ref, lambda v: replace(v, disabled=True))

    def enable(self, ref: str) -> None:
        target = self._parse(ref)
        info = self._existing(target)
        below_floor = range(target.version + 1, info.min_decryption)

        def enabled(state: KeyState) -> dict[int, VersionState]:
            if state.version(target.version).deletion_date is not None:
                raise ProviderError(
                    f"{ref} is scheduled for deletion and cannot be enabled again",
                    reason="KmsKeyPendingDeletion",
                )
            # Lowering min_decryption_version to this version unblocks the ones
            # between it and the old floor: record those as disabled so that they stay so.
            changes = {n: replace(state.version(n), disabled=True) for n in below_floor}
            changes[target.version] = replace(state.version(target.version), disabled=False)
            return changes

        self.state.update(target.key, enabled)
        if target.version < info.min_decryption:
            self._configure(target.key, min_decryption_version=target.version)

    def schedule_deletion(self, ref: str, window_days: int) -> datetime:
        target = self._parse(ref)
        existing = self.state.read(target.key).version(target.version).deletion_date
        if existing is not None:
            return existing  # a retry: keep the first schedule
        when = datetime.now(UTC) + timedelta(days=window_days)
        self._refuse(ref, lambda v: replace(v, deletion_date=when))
        return when

    def generate_data_key(self, ref: str) -> DataKey:
        target = self._parse(ref)
        self._ensure_usable(target)
        response = self._transit_crypto(
            target,
            "datakey/plaintext",
            {"key_version": target.version, "bits": 256},
            what="generating a data key",
        )
        data = response["data"]
        if int(data["key_version"]) != target.version:
            raise ProviderError(f"Vault wrapped the data key with another version than {ref}")
        return DataKey(
            plaintext=base64.b64decode(data["plaintext"]),
            wrapped=str(data["ciphertext"]).encode("ascii"),
        )

    def unwrap_data_key(self, ref: str, wrapped: bytes) -> bytes:
        target = self._parse(ref)
        match = _CIPHERTEXT.match(wrapped.decode("ascii", errors="replace"))
        if match is None:
            raise ProviderError(f"cannot unwrap data key with {ref}: not a transit ciphertext")
        if int(match["version"]) != target.version:
            raise ProviderError(
                f"cannot unwrap data key with {ref}: it was wrapped by version "
                f"{match['version']}, not {target.version}"
            )
        self._ensure_usable(target)
        response = self._transit_crypto(
            target, "decrypt", {"ciphertext": match.string}, what="unwrapping a data key"
        )
        return base64.b64decode(response["data"]["plaintext"])

    def close(self) -> None:
        self.session.close()

    # -- internals ----------------------------------------------------------------

    def _parse(self, ref: str) -> TransitVersion:
        match = _REF.match(ref)
        if match is None or match["mount"] != self.mount:
            raise KmsKeyNotFound(f"{ref} is not a version of a key on transit mount {self.mount}")
        return TransitVersion(match["mount"], match["key"], int(match["version"]))

    def _key_info(self, key: str) -> _KeyInfo | None:
        response = self.session.read(
            f"reading transit key {self.mount}/{key}",
            lambda c: c.secrets.transit.read_key(key, mount_point=self.mount),
        )
        if response is None:
            return None
        data = response["data"]
        return _KeyInfo(
            latest=int(data["latest_version"]),
            min_decryption=int(data["min_decryption_version"]),
            min_encryption=int(data["min_encryption_version"]),
            min_available=int(data.get("min_available_version") or 0),
            key_type=str(data["type"]),
        )

    def _existing(self, target: TransitVersion) -> _KeyInfo:
        info = self._key_info(target.key)
        if info is None or not info.has(target.version):
            raise KmsKeyNotFound(f"{target.ref} does not exist in Vault at {self.endpoint}")
        return info

    def _kms_key(self, target: TransitVersion, info: _KeyInfo, version: VersionState) -> KmsKey:
        if version.deletion_date is not None:
            state = KmsKeyState.PENDING_DELETION
        elif version.disabled or target.version < info.min_decryption:
            state = KmsKeyState.DISABLED
        else:
            state = KmsKeyState.ENABLED
        return KmsKey(ref=target.ref, state=state, deletion_date=version.deletion_date)

    def _make_next_version(self, target: TransitVersion) -> None:
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

    def _refuse(self, ref: str, change: Callable[[VersionState], VersionState]) -> None:
        """Record a refusal for the version, then let transit enforce what it can."""
        target = self._parse(ref)
        info = self._existing(target)
        state = self.state.update(
            target.key, lambda s: {target.version: change(s.version(target.version))}
        )
        self._raise_floor(target.key, info, state)

    def _raise_floor(self, key: str, info: _KeyInfo, state: KeyState) -> None:
        floor = raised_floor(state, current=info.min_decryption, latest=info.latest)
        if floor == info.min_decryption:
            return
        # Transit requires min_encryption_version to be 0 or >= min_decryption_version.
        encryption = info.min_encryption and max(info.min_encryption, floor)
        self._configure(key, min_decryption_version=floor, min_encryption_version=encryption)

    def _configure(self, key: str, **config: int) -> None:
        # hvac's update_key_configuration rejects min_encryption == min_decryption,
        # which transit allows, so the config is posted directly.
        self.session.call(
            f"configuring transit key {self.mount}/{key}",
            lambda c: c.adapter.post(f"/v1/{self.mount}/keys/{key}/config", json=config),
        )

    def _ensure_usable(self, target: TransitVersion) -> None:
        version = self.state.read(target.key).version(target.version)
        if version.deletion_date is not None:
            raise ProviderError(
                f"{target.ref} is scheduled for deletion", reason="KmsKeyPendingDeletion"
            )
        if version.disabled:
            raise ProviderError(f"{target.ref} is disabled", reason="KmsKeyDisabled")

    def _transit_crypto(
        self, target: TransitVersion, endpoint: str, body: dict[str, Any], *, what: str
    ) -> Any:
        def post(client: Any) -> Any:
            try:
                return client.adapter.post(f"/v1/{self.mount}/{endpoint}/{target.key}", json=body)
            except hvac.exceptions.InvalidRequest as error:
                raise _crypto_refusal(target, what, str(error)) from None

        return self.session.call(f"{what} with {target.ref}", post)


def _crypto_refusal(target: TransitVersion, what: str, text: str) -> ProviderError:
    """Transit's 400s on datakey/decrypt, as errors that say what they mean."""
    if "higher than the latest" in text:
        return KmsKeyNotFound(f"{target.ref} does not exist (transit's latest version is lower)")
    if "minimum encryption" in text:
        return ProviderError(
            f"transit refuses {what} with {target.ref}: an older version than the primary "
            "(min_encryption_version); use the ACTIVE version's ref",
            reason="KmsKeyNotPrimary",
        )
    if "disallowed by policy" in text or "no such key version" in text:
        return ProviderError(
            f"transit refuses {what} with {target.ref}: blocked by min_decryption_version",
            reason="KmsKeyDisabled",
        )
    # Decrypting with the wrong key fails authentication; never echo the ciphertext.
    return ProviderError(f"cannot finish {what} with {target.ref}: not wrapped by it")


# Path segments: no "." or ".." (Vault would resolve them), nothing a ref could not parse.
_MOUNT = re.compile(r"^(?!\.\.?(/|$))[A-Za-z0-9_.-]+(/(?!\.\.?(/|$))[A-Za-z0-9_.-]+)*$")
_ADDRESS = re.compile(r"^https?://[^/\s]+/?$")


@register_backend("vault")
def open_vault_backend(config: BackendConfig, settings: Settings) -> VaultBackend:
    options = config.options
    where = f"provider {config.provider_name!r}"
    address = str(options.get("address") or "")
    if not _ADDRESS.match(address):
        raise InvalidSpec(
            f"{where}: spec.vault.address must be http(s)://host[:port] without a path, "
            f"got {address!r}"
        )
    mount = _path_option(options, "mount", "transit", where)
    state_mount = _path_option(options, "stateMount", "secret", where)
    state_path = _path_option(options, "statePath", "keyledger", where)
    namespace = str(options.get("namespace") or "") or None
    session = VaultSession(address.rstrip("/"), _auth(config, where), namespace=namespace)
    state = TransitStateStore(session, mount=state_mount, path=state_path, transit_mount=mount)
    return VaultBackend(session, mount=mount, state=state)


def _path_option(options: Mapping[str, object], name: str, default: str, where: str) -> str:
    value = str(options.get(name) or default).strip("/")
    if not _MOUNT.match(value):
        raise InvalidSpec(
            f"{where}: spec.vault.{name} {value!r} must be a Vault path: segments of "
            "letters, digits, '_', '.', '-' separated by '/'"
        )
    return value


def _auth(config: BackendConfig, where: str) -> VaultAuth:
    auth = config.options.get("auth") or {}
    if not isinstance(auth, Mapping):
        raise InvalidSpec(f"{where}: spec.vault.auth must be an object")
    method = str(auth.get("method") or "token")
    if method == "token":
        token = config.credentials.get("token")
        if not token:
            raise InvalidSpec(
                f"{where}: spec.vault.auth.method is token, so credentialsRef must name a "
                "Secret with the Vault token under key `token`"
            )
        return VaultAuth("token", token=token)
    if method == "kubernetes":
        role = str(auth.get("role") or "")
        if not role:
            raise InvalidSpec(f"{where}: spec.vault.auth.role is required for kubernetes auth")
        return VaultAuth(
            "kubernetes",
            role=role,
            mount_path=str(auth.get("mountPath") or "kubernetes").strip("/"),
            token_path=Path(str(auth.get("tokenPath") or SERVICE_ACCOUNT_TOKEN)),
        )
    raise InvalidSpec(
        f"{where}: spec.vault.auth.method must be token or kubernetes, not {method!r}"
    )

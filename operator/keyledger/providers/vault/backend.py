"""The `vault` backend: HashiCorp Vault / OpenBao transit, through hvac.

Versions. One transit key (aes256-gcm96) per tenant key, named from tenant and
keyName (see `names`); ledger version N is transit version N, with ref
`vault:<mount>/<transit key>#<N>`; `rotate` makes N+1. The ledger pins the
active version and every data key names `key_version`; `make_primary` sets the
key's `min_encryption_version` to the primary, so transit itself refuses new
data keys from older versions (a rollback lowers it again). A client that still
believes an older version is ACTIVE gets reason KmsKeyNotPrimary and should
re-read the ledger.

Disable, enable, deletion. Transit has no per-version switch. keyledger keeps
per-version state (disabled, deletion date, the creating marker) in a KV v2
mount of the same Vault, see `state`, and checks it before every data-key
call (`describe` takes it as this process last read or wrote it, `state.known`).
Where transit can enforce the same thing it does: when the oldest versions are
all refused, `min_decryption_version` is raised past them, so Vault refuses
them to every client, not only keyledger's. A version refused in the middle
(v2 of 1..3) is refused by keyledger alone: transit cannot express it. Vault
deletes only whole keys, so `schedule_deletion` records the date and refuses
crypto, and `destroy_due` destroys what transit can once the date has passed:
the oldest versions are trimmed (`min_available_version`), and a key whose
versions are all due is deleted. A due version with an older one still kept
stays refused as while pending, until the older ones are due too.

Idempotency. `create_key_version` claims the version for the request's marker
in the state store, then creates/rotates only if transit's latest version is
below it, so a retry after a crash returns the version already made; a version
held by another marker, or a gap, is refused (`TransitVersionConflict`).

Access. Token auth (credentialsRef key `token`) or kubernetes auth with the
operator's ServiceAccount token; `policy.required_policy` is the policy.

Modules: `transit` makes the transit engine's calls, `state` keeps the per-version
state, `session` logs in and maps errors through `errors`.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from keyledger.errors import (
    KEY_DISABLED,
    KEY_PENDING_DELETION,
    InvalidSpec,
    KeyledgerError,
    KmsKeyNotFound,
    ProviderError,
)
from keyledger.providers.base import (
    BackendConfig,
    DataKey,
    KeyVersionRequest,
    KmsKey,
    KmsKeyState,
)
from keyledger.providers.registry import kms_provider_of, register_backend
from keyledger.providers.vault.config import read_options
from keyledger.providers.vault.names import TransitVersion, transit_key_name
from keyledger.providers.vault.policy import check_access
from keyledger.providers.vault.session import VaultSession
from keyledger.providers.vault.state import (
    KeyState,
    TransitStateStore,
    TransitVersionConflict,
    VersionState,
    due_prefix,
    raised_floor,
)
from keyledger.providers.vault.transit import KEY_TYPE, TransitKeyInfo, TransitKeys
from keyledger.settings import Settings

log = logging.getLogger(__name__)
_CIPHERTEXT = re.compile(r"^vault:v(?P<version>[0-9]+):[A-Za-z0-9+/=]+$")


class VaultBackend:
    provider = kms_provider_of("vault")
    adoption_refusal: str | None = (
        "transit key versions are numbered by keyledger from 1, "
        "so an adopted transit key's numbering could not be continued"
    )
    region: str | None = None

    def __init__(self, session: VaultSession, *, mount: str, state: TransitStateStore) -> None:
        self.session = session
        self.mount = mount
        self.state = state
        self.transit = TransitKeys(session, mount)
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
        info = self.transit.info(target.key)
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
            self.transit.make_version(target)
            info = self.transit.info(target.key)
        assert info is not None  # it exists now: made above or seen before
        self._raise_floor(target.key, info, state)
        return self._kms_key(target, info, state.version(target.version))

    def find_key_version(self, marker: str) -> KmsKey | None:
        found = self.state.find_marker(marker)
        if found is None:
            return None
        target = TransitVersion(self.mount, *found)
        info = self.transit.info(target.key)
        version = self.state.read(target.key).version(target.version)
        # A claim whose create/rotate never happened (crash) is not a key yet.
        if info is None or not info.has(target.version) or version.marker != marker:
            return None
        return self._kms_key(target, info, version)

    def describe(self, ref: str) -> KmsKey:
        # One call to Vault per drift check: transit, where changes made outside
        # keyledger show, is read every time; keyledger's own state as last known.
        target = self._parse(ref)
        info = self.transit.info(target.key)
        if info is None or not info.has(target.version):
            return KmsKey(ref=ref, state=KmsKeyState.MISSING)
        return self._kms_key(target, info, self.state.known(target.key).version(target.version))

    def make_primary(self, ref: str, request: KeyVersionRequest) -> None:
        target = self._parse(ref)
        info = self._existing(target)
        state = self.state.read(target.key)
        if state.version(target.version).deletion_date or target.version < info.min_decryption:
            raise ProviderError(
                f"{ref} cannot become the primary version: it is scheduled for deletion or "
                "blocked by min_decryption_version",
                reason=KEY_DISABLED,
            )
        self.transit.configure(target.key, min_encryption_version=target.version)

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
                    reason=KEY_PENDING_DELETION,
                )
            # Lowering min_decryption_version to this version unblocks the ones
            # between it and the old floor: record those as disabled so that they stay so.
            changes = {n: replace(state.version(n), disabled=True) for n in below_floor}
            changes[target.version] = replace(state.version(target.version), disabled=False)
            return changes

        self.state.update(target.key, enabled)
        if target.version < info.min_decryption:
            self.transit.configure(target.key, min_decryption_version=target.version)

    def schedule_deletion(self, ref: str, window_days: int) -> datetime:
        target = self._parse(ref)
        existing = self.state.read(target.key).version(target.version).deletion_date
        if existing is not None:  # a retry: keep the first schedule, finish listing it
            self.state.add_to_deletion_schedule(target.key, target.version, existing)
            return existing
        when = datetime.now(UTC) + timedelta(days=window_days)
        self._refuse(ref, lambda v: replace(v, deletion_date=when))
        self.state.add_to_deletion_schedule(target.key, target.version, when)
        return when

    def destroy_due(self, now: datetime) -> list[str]:
        """Destroy what transit can of the versions whose deletion date has passed.

        Per transit key: when every version it still has is due, the key is
        deleted (deletion_allowed, then delete) and its keyledger state dropped;
        otherwise the due versions older than any kept one are trimmed, after
        min_decryption_version and min_encryption_version are raised past them
        (transit requires both). Other due versions stay refused and scheduled,
        and are not returned. Each key is handled on its own, so one Vault
        refuses does not keep the others' material alive; the refusal is raised
        once a call destroys nothing else. Deleting keys needs `delete` on
        `<mount>/keys/keyledger.*` in the token's policy.
        """
        destroyed: list[str] = []
        refused: KeyledgerError | None = None
        for key, dates in self.state.read_deletion_schedule().items():
            due = [n for n, when in dates.items() if when <= now]
            if not due:
                continue
            try:
                gone = self._destroy_due_versions(key, now, due)
                self.state.remove_from_deletion_schedule(key, gone)
            except KeyledgerError as error:
                log.warning(
                    "due versions of transit key %s/%s not destroyed: %s", self.mount, key, error
                )
                refused = refused or error
                continue
            destroyed += [TransitVersion(self.mount, key, n).ref for n in sorted(gone)]
        if refused is not None and not destroyed:
            raise refused
        return destroyed

    def generate_data_key(self, ref: str) -> DataKey:
        target = self._parse(ref)
        self._ensure_usable(target)
        response = self.transit.crypto(
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
        response = self.transit.crypto(
            target, "decrypt", {"ciphertext": match.string}, what="unwrapping a data key"
        )
        return base64.b64decode(response["data"]["plaintext"])

    def close(self) -> None:
        self.session.close()

    # -- internals ----------------------------------------------------------------

    def _parse(self, ref: str) -> TransitVersion:
        return TransitVersion.parse(ref, self.mount)

    def _existing(self, target: TransitVersion) -> TransitKeyInfo:
        info = self.transit.info(target.key)
        if info is None or not info.has(target.version):
            raise KmsKeyNotFound(f"{target.ref} does not exist in Vault at {self.endpoint}")
        return info

    def _kms_key(
        self, target: TransitVersion, info: TransitKeyInfo, version: VersionState
    ) -> KmsKey:
        if version.deletion_date is not None:
            state = KmsKeyState.PENDING_DELETION
        elif version.disabled or target.version < info.min_decryption:
            state = KmsKeyState.DISABLED
        else:
            state = KmsKeyState.ENABLED
        return KmsKey(ref=target.ref, state=state, deletion_date=version.deletion_date)

    def _refuse(self, ref: str, change: Callable[[VersionState], VersionState]) -> None:
        """Record a refusal for the version, then let transit enforce what it can."""
        target = self._parse(ref)
        info = self._existing(target)
        state = self.state.update(
            target.key, lambda s: {target.version: change(s.version(target.version))}
        )
        self._raise_floor(target.key, info, state)

    def _destroy_due_versions(self, key: str, now: datetime, due: list[int]) -> list[int]:
        """Destroy what transit can of `key`; which of the `due` versions are gone now.

        A version already gone (an earlier call stopped before updating the
        schedule) counts as destroyed, so every destruction is reported.
        """
        info = self.transit.info(key)
        if info is not None:
            first = max(info.min_available, 1)
            destroyable = due_prefix(self.state.read(key), now, first=first, latest=info.latest)
            if destroyable.stop > info.latest:
                self.transit.delete(key)
                info = None
            elif destroyable:
                self.transit.trim(key, info, keep_from=destroyable.stop)
                info = replace(info, min_available=destroyable.stop)
        if info is None:
            self.state.forget(key)
        return [n for n in due if info is None or not info.has(n)]

    def _raise_floor(self, key: str, info: TransitKeyInfo, state: KeyState) -> None:
        floor = raised_floor(state, current=info.min_decryption, latest=info.latest)
        if floor == info.min_decryption:
            return
        # Transit requires min_encryption_version to be 0 or >= min_decryption_version.
        encryption = info.min_encryption and max(info.min_encryption, floor)
        self.transit.configure(key, min_decryption_version=floor, min_encryption_version=encryption)

    def _ensure_usable(self, target: TransitVersion) -> None:
        version = self.state.read(target.key).version(target.version)
        if version.deletion_date is not None:
            raise ProviderError(
                f"{target.ref} is scheduled for deletion", reason=KEY_PENDING_DELETION
            )
        if version.disabled:
            raise ProviderError(f"{target.ref} is disabled", reason=KEY_DISABLED)


@register_backend("vault")
def open_vault_backend(config: BackendConfig, settings: Settings) -> VaultBackend:
    options = read_options(config)
    session = VaultSession(options.address, options.auth, namespace=options.namespace)
    state = TransitStateStore(
        session, mount=options.state_mount, path=options.state_path, transit_mount=options.mount
    )
    return VaultBackend(session, mount=options.mount, state=state)

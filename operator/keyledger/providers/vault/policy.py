"""What keyledger needs from a Vault token, and the check that the token has it.

The least-privilege policy (`required_policy`) covers transit keys named
`keyledger.*` and the state documents under `<stateMount>/data/<statePath>/`;
the token also needs Vault's `default` policy (lookup-self, capabilities-self,
sys/internal/ui/mounts). `check_access` proves all of it with four cheap calls.
"""

from __future__ import annotations

from typing import Any

from keyledger.errors import InvalidSpec, ProviderAccessDenied
from keyledger.providers.vault.names import KEY_PREFIX, PROBE_KEY
from keyledger.providers.vault.session import VaultSession


def required_policy(mount: str, state_mount: str, state_path: str) -> str:
    """A least-privilege Vault policy (HCL) for one keyledger provider."""
    state = f"{state_mount}/data/{state_path.strip('/')}"
    return (
        f'path "{mount}/keys/{KEY_PREFIX}*" {{ capabilities = ["read", "update", "delete"] }}\n'
        f'path "{mount}/datakey/plaintext/{KEY_PREFIX}*" {{ capabilities = ["update"] }}\n'
        f'path "{mount}/decrypt/{KEY_PREFIX}*" {{ capabilities = ["update"] }}\n'
        f'path "{state}/*" {{ capabilities = ["create", "read", "update"] }}\n'
    )


def required_capabilities(
    mount: str, state_mount: str, state_path: str, key: str
) -> dict[str, set[str]]:
    """The Vault paths keyledger uses for transit key `key`, and what each needs."""
    state = f"{state_mount}/data/{state_path.strip('/')}"
    return {
        # delete and trim: enforcing deletion windows (destroy_due).
        f"{mount}/keys/{key}": {"read", "update", "delete"},
        f"{mount}/keys/{key}/trim": {"update"},
        f"{mount}/keys/{key}/rotate": {"update"},
        f"{mount}/keys/{key}/config": {"update"},
        f"{mount}/datakey/plaintext/{key}": {"update"},
        f"{mount}/decrypt/{key}": {"update"},
        f"{state}/keys/{mount}/{key}": {"create", "read", "update"},
        f"{state}/markers/{key}.v1": {"create", "read", "update"},
    }


def check_access(session: VaultSession, mount: str, state_mount: str, state_path: str) -> None:
    """The token is valid, both mounts are what the spec says, and the policy suffices."""
    session.call("looking up its own token", lambda c: c.auth.token.lookup_self())
    _expect_mount(session, mount, "transit", None, "spec.vault.mount")
    _expect_mount(session, state_mount, "kv", "2", "spec.vault.stateMount")
    needed = required_capabilities(mount, state_mount, state_path, PROBE_KEY)
    response = session.call(
        "checking the token's capabilities",
        lambda c: c.adapter.post("/v1/sys/capabilities-self", json={"paths": sorted(needed)}),
    )
    granted: dict[str, list[str]] = response["data"]
    missing = [
        f"{path} ({', '.join(sorted(caps - set(granted.get(path, ()))))})"
        for path, caps in needed.items()
        if "root" not in granted.get(path, ()) and not caps <= set(granted.get(path, ()))
    ]
    if missing:
        raise ProviderAccessDenied(
            f"the Vault token for {session.address} lacks what keyledger needs: "
            f"{'; '.join(missing)}. Grant it for {KEY_PREFIX}* keys in the token's policy"
        )


def _expect_mount(
    session: VaultSession, mount: str, kind: str, version: str | None, field: str
) -> None:
    # Vault answers 403 here both for a mount the policy does not reach and for
    # no mount at all; the access-denied message names both causes.
    response: Any = session.call(
        f"reading the secrets engine at {mount}/ (it is missing, or the policy grants nothing "
        f"under it; {field})",
        lambda c: c.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}"),
    )
    data = response["data"]
    found_version = (data.get("options") or {}).get("version")
    if data.get("type") != kind or (version is not None and found_version != version):
        found = str(data.get("type")) + (f" v{found_version}" if found_version else "")
        expected = kind + (f" v{version}" if version else "")
        raise InvalidSpec(
            f"{field}: the secrets engine at {mount}/ is {found}, not {expected}; "
            f"point {field} at a {expected} mount or enable one there"
        )

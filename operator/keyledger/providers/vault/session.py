"""A logged-in hvac client for one Vault/OpenBao provider.

Every call to Vault goes through `VaultSession.call`, which logs in when needed
(token or kubernetes auth), logs in again once when a kubernetes-auth token has
expired, and turns hvac/requests exceptions into keyledger errors (`errors`)
whose text is sanitized with the credentials as secrets and never chained to
the original.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import hvac
import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.util.retry import Retry

from keyledger.errors import ProviderAccessDenied
from keyledger.providers.sanitize import sanitize
from keyledger.providers.vault.config import REQUEST_TIMEOUT_S, VaultAuth
from keyledger.providers.vault.errors import SDK_ERRORS, error_detail, is_absent, translate_error

T = TypeVar("T")

# Reads are safe to repeat; writes are repeated only when Vault said it did nothing.
_READS = frozenset({"GET", "HEAD", "LIST"})


class VaultRetry(Retry):
    """Retries inside one call, with backoff and Vault's Retry-After: a 429 (rate
    limited: the request was not processed) for any method; 502-504 and dropped
    connections only for reads, which cannot do anything twice. Without it one
    throttled call failed a whole pass, and the key waited out the pass backoff."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 429:
            return True
        return super().is_retry(method, status_code, has_retry_after)


def _retrying_session(address: str) -> requests.Session:
    retry = VaultRetry(
        total=3,
        connect=2,
        backoff_factor=0.2,
        status_forcelist=(502, 503, 504),
        allowed_methods=_READS,
        raise_on_status=False,  # the last answer reaches hvac, which names the error
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # What the environment says for this address (HTTPS_PROXY/NO_PROXY, a
    # REQUESTS_CA_BUNDLE), read once: requests re-reads it on every call, a sixth of
    # a drift check's CPU, and a pod's environment does not change.
    settings = session.merge_environment_settings(address, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    session.trust_env = False
    return session


class VaultSession:
    """One hvac client, logged in on first use; safe to share between threads."""

    def __init__(
        self,
        address: str,
        auth: VaultAuth,
        *,
        namespace: str | None = None,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.address = address
        self._auth = auth
        http = _retrying_session(address)
        # token="" rather than None: hvac would fall back to VAULT_TOKEN / ~/.vault-token.
        self._client: Any = hvac.Client(
            url=address,
            token=auth.token or "",
            namespace=namespace,
            timeout=timeout,
            session=http,
        )
        self._http = http
        self._transport = http.get_adapter(address)
        base = requests.PreparedRequest()
        base.prepare_url(address, None)
        self._base_url = str(base.url).rstrip("/")
        # What hvac hands requests on every call (its adapter's record of TLS
        # verification, a client certificate, proxies and the timeout), merged with
        # the session's settings as requests merges them: `get_json` sends these.
        sent = self._client.adapter._kwargs
        self._send_settings: dict[str, Any] = {
            **http.merge_environment_settings(
                address, sent["proxies"], None, sent["verify"], sent["cert"]
            ),
            "stream": False,
            "timeout": sent["timeout"],
        }
        self._logged_in = auth.method == "token"
        # Credentials learnt at login (the ServiceAccount JWT, the Vault token).
        self._login_secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._auth.token, *self._login_secrets) if s)

    def call(self, action: str, operation: Callable[[Any], T]) -> T:
        """`operation(client)` with Vault errors turned into keyledger errors."""
        try:
            try:
                return operation(self._logged_in_client())
            except hvac.exceptions.Forbidden:
                if self._auth.method != "kubernetes":
                    raise
                # The kubernetes-auth token may have expired: log in again, once.
                # A 403 means Vault did nothing, so repeating the call is safe.
                self._login(force=True)
                return operation(self._client)
        except SDK_ERRORS as error:
            raise translate_error(
                error, action=action, address=self.address, secrets=self.secrets
            ) from None

    def read(self, action: str, operation: Callable[[Any], T]) -> T | None:
        """Like `call`, but None when the object does not exist (its mount does)."""

        def absent_is_none(client: Any) -> T | None:
            try:
                return operation(client)
            except hvac.exceptions.InvalidPath as error:
                if is_absent(error):
                    return None
                raise

        return self.call(action, absent_is_none)

    def get_json(self, action: str, path: str) -> dict[str, Any] | None:
        """GET `path` (from /v1/): Vault's JSON answer, or None when the object does
        not exist. Errors, logins and retries are those of `read`."""
        return self.read(action, lambda client: self._get_json(client, path))

    def close(self) -> None:
        self._client.adapter.close()

    def _get_json(self, client: Any, path: str) -> Any:
        """One GET handed straight to the session's transport adapter.

        A drift check reads a transit key, and through hvac and a requests Session
        that costs about twice what the HTTP exchange does: preparing the request
        anew (settings, cookies, hooks, URL parsing) and building the response's
        cookie jar. Here the request carries the headers hvac would send, goes
        through the same adapter (its connection pools, TLS verification, retries
        and proxies) with the settings hvac would pass, and requests turns transport
        failures into its exceptions as before. Vault's API sets no cookies, so none
        are kept or sent. A redirect (a standby node) is left to hvac, which follows it;
        an error answer raises hvac's exception for it, as any other call would.
        """
        adapter = client.adapter
        headers: CaseInsensitiveDict[str | bytes] = CaseInsensitiveDict(self._http.headers)
        if adapter.request_header:
            headers["X-Vault-Request"] = "true"
        if adapter.token:
            headers["X-Vault-Token"] = adapter.token
        if adapter.namespace:
            headers["X-Vault-Namespace"] = adapter.namespace
        # Prepared by hand: the base URL was normalized once, and keyledger's paths
        # (mount, state path, key names) are of characters no URL encoding touches.
        request = requests.PreparedRequest()
        request.method, request.url, request.headers = "GET", f"{self._base_url}{path}", headers
        response = self._transport.send(request, **self._send_settings)
        if response.status_code == 200:
            return response.json()
        if response.ok:
            response.close()
            return adapter.get(path)
        adapter._raise_for_error("get", request.url, response)
        raise AssertionError("hvac raises for every error status")  # pragma: no cover

    def _logged_in_client(self) -> Any:
        if not self._logged_in:
            self._login(force=False)
        return self._client

    def _login(self, *, force: bool) -> None:
        with self._lock:
            if self._logged_in and not force:
                return  # another thread logged in meanwhile
            jwt = self._service_account_token()
            role, mount = self._auth.role, self._auth.mount_path
            self._login_secrets = (jwt,)
            try:
                response = self._client.auth.kubernetes.login(role, jwt, mount_point=mount)
            except (
                hvac.exceptions.Forbidden,
                hvac.exceptions.Unauthorized,
                hvac.exceptions.InvalidRequest,
            ) as error:
                detail = sanitize(error_detail(error), self.secrets)
                raise ProviderAccessDenied(
                    f"Vault at {self.address} refused kubernetes login as role {role!r} at "
                    f"auth/{mount}: {detail}. Check spec.vault.auth.role and mountPath, and "
                    "that the role binds the operator's ServiceAccount"
                ) from None
            except SDK_ERRORS as error:
                raise translate_error(
                    error,
                    action="logging in with kubernetes auth",
                    address=self.address,
                    secrets=self.secrets,
                ) from None
            self._login_secrets = (jwt, str(response["auth"]["client_token"]))
            self._logged_in = True

    def _service_account_token(self) -> str:
        # Read at every login: kubelet rotates projected tokens.
        try:
            return self._auth.token_path.read_text().strip()
        except OSError as error:
            raise ProviderAccessDenied(
                f"cannot read the ServiceAccount token at {self._auth.token_path} for Vault "
                f"kubernetes auth ({error.strerror}); mount one (automountServiceAccountToken) "
                "or set spec.vault.auth.tokenPath",
                reason="ServiceAccountTokenUnreadable",
            ) from None

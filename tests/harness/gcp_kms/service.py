"""The Cloud KMS test server on the wire: gRPC generic handlers that decode the SDK's
own request messages, apply `keys.KeyStore`, and answer with the SDK's own messages.

Every handler is registered from `surface.METHODS`; requests and responses are
checked against `surface.FIELDS` (see there), so the server cannot quietly grow
beyond what the conformance check has compared with the published definition.

Two servers share one `KeyStore`: a plaintext one that takes no credentials (the
backend's `insecure` option, and the tests' own view) and a TLS one that takes
only the bearer tokens of the service accounts it knows (`auth`), as Cloud KMS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from datetime import timedelta
from typing import Any, cast

import grpc  # type: ignore[import-untyped]
import proto  # type: ignore[import-untyped]
from google.cloud import kms_v1

from tests.harness.gcp_kms.auth import accepts
from tests.harness.gcp_kms.keys import (
    CryptoKey,
    KeyRing,
    KeyStore,
    KmsFault,
    State,
    Status,
    Version,
    page,
)
from tests.harness.gcp_kms.surface import FIELDS, METHODS, SERVICE

log = logging.getLogger(__name__)

_VersionState = kms_v1.CryptoKeyVersion.CryptoKeyVersionState
_Algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm
_Purpose = kms_v1.CryptoKey.CryptoKeyPurpose
_SOFTWARE = kms_v1.ProtectionLevel.SOFTWARE
_WELL_KNOWN = "google.protobuf."
_STATES = {
    State.ENABLED: _VersionState.ENABLED,
    State.DISABLED: _VersionState.DISABLED,
    State.DESTROY_SCHEDULED: _VersionState.DESTROY_SCHEDULED,
    State.DESTROYED: _VersionState.DESTROYED,
}

Handler = Callable[[Any], Any]


class CloudKmsService:
    """One handler per method of `surface.METHODS`, over one `KeyStore`.

    `accounts` (email -> PEM public key) are the service accounts whose tokens are
    accepted; None takes requests without credentials.
    """

    def __init__(
        self, store: KeyStore | None = None, accounts: Mapping[str, str] | None = None
    ) -> None:
        self.store = store or KeyStore()
        self.accounts = None if accounts is None else dict(accounts)

    # -- key rings -----------------------------------------------------------------

    def ListKeyRings(self, request: kms_v1.ListKeyRingsRequest) -> kms_v1.ListKeyRingsResponse:
        rings = self.store.key_rings(request.parent)
        start, end, token = page(rings, request.page_size, request.page_token)
        return kms_v1.ListKeyRingsResponse(
            key_rings=[_key_ring(r) for r in rings[start:end]],
            next_page_token=token,
            total_size=len(rings),
        )

    def CreateKeyRing(self, request: kms_v1.CreateKeyRingRequest) -> kms_v1.KeyRing:
        return _key_ring(self.store.create_key_ring(request.parent, request.key_ring_id))

    # -- crypto keys ---------------------------------------------------------------

    def ListCryptoKeys(
        self, request: kms_v1.ListCryptoKeysRequest
    ) -> kms_v1.ListCryptoKeysResponse:
        keys = self.store.crypto_keys(request.parent)
        start, end, token = page(keys, request.page_size, request.page_token)
        return kms_v1.ListCryptoKeysResponse(
            crypto_keys=[_crypto_key(k) for k in keys[start:end]],
            next_page_token=token,
            total_size=len(keys),
        )

    def GetCryptoKey(self, request: kms_v1.GetCryptoKeyRequest) -> kms_v1.CryptoKey:
        return _crypto_key(self.store.crypto_key(request.name))

    def CreateCryptoKey(self, request: kms_v1.CreateCryptoKeyRequest) -> kms_v1.CryptoKey:
        body = request.crypto_key
        if body.purpose != _Purpose.ENCRYPT_DECRYPT:
            raise KmsFault(Status.UNIMPLEMENTED, "this test server makes ENCRYPT_DECRYPT keys only")
        template = body.version_template
        if template.algorithm not in (
            _Algorithm.CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED,
            _Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        ) or template.protection_level not in (
            kms_v1.ProtectionLevel.PROTECTION_LEVEL_UNSPECIFIED,
            _SOFTWARE,
        ):
            raise KmsFault(
                Status.UNIMPLEMENTED,
                "this test server makes GOOGLE_SYMMETRIC_ENCRYPTION SOFTWARE versions only",
            )
        # proto-plus hands Durations over as timedelta (its stubs say Duration).
        duration = (
            cast(timedelta, body.destroy_scheduled_duration)
            if "destroy_scheduled_duration" in body
            else None
        )
        return _crypto_key(
            self.store.create_crypto_key(
                request.parent, request.crypto_key_id, dict(body.labels), duration
            )
        )

    def UpdateCryptoKey(self, request: kms_v1.UpdateCryptoKeyRequest) -> kms_v1.CryptoKey:
        paths = list(request.update_mask.paths)
        if not paths:
            raise KmsFault(Status.INVALID_ARGUMENT, "update_mask is required.")
        if paths != ["labels"]:
            raise KmsFault(
                Status.UNIMPLEMENTED, f"this test server updates labels only, not {paths}"
            )
        key = self.store.set_labels(request.crypto_key.name, dict(request.crypto_key.labels))
        return _crypto_key(key)

    def UpdateCryptoKeyPrimaryVersion(
        self, request: kms_v1.UpdateCryptoKeyPrimaryVersionRequest
    ) -> kms_v1.CryptoKey:
        return _crypto_key(self.store.set_primary(request.name, request.crypto_key_version_id))

    # -- versions -------------------------------------------------------------------

    def ListCryptoKeyVersions(
        self, request: kms_v1.ListCryptoKeyVersionsRequest
    ) -> kms_v1.ListCryptoKeyVersionsResponse:
        versions = self.store.versions(request.parent)
        start, end, token = page(versions, request.page_size, request.page_token)
        return kms_v1.ListCryptoKeyVersionsResponse(
            crypto_key_versions=[_version(request.parent, v) for v in versions[start:end]],
            next_page_token=token,
            total_size=len(versions),
        )

    def GetCryptoKeyVersion(
        self, request: kms_v1.GetCryptoKeyVersionRequest
    ) -> kms_v1.CryptoKeyVersion:
        key, version = self.store.version(request.name)
        return _version(key.name, version)

    def CreateCryptoKeyVersion(
        self, request: kms_v1.CreateCryptoKeyVersionRequest
    ) -> kms_v1.CryptoKeyVersion:
        key, version = self.store.add_version(request.parent)
        return _version(key.name, version)

    def UpdateCryptoKeyVersion(
        self, request: kms_v1.UpdateCryptoKeyVersionRequest
    ) -> kms_v1.CryptoKeyVersion:
        paths = list(request.update_mask.paths)
        if paths != ["state"]:
            raise KmsFault(
                Status.INVALID_ARGUMENT if not paths else Status.UNIMPLEMENTED,
                f"this test server updates a version's state only, not {paths}",
            )
        body = request.crypto_key_version
        wanted = {_VersionState.ENABLED: State.ENABLED, _VersionState.DISABLED: State.DISABLED}
        state = wanted.get(body.state)
        if state is None:
            raise KmsFault(
                Status.INVALID_ARGUMENT,
                "state can only be changed to ENABLED or DISABLED with UpdateCryptoKeyVersion.",
            )
        version = self.store.set_state(body.name, state)
        return _version(body.name.rpartition("/cryptoKeyVersions/")[0], version)

    def DestroyCryptoKeyVersion(
        self, request: kms_v1.DestroyCryptoKeyVersionRequest
    ) -> kms_v1.CryptoKeyVersion:
        version = self.store.destroy(request.name)
        return _version(request.name.rpartition("/cryptoKeyVersions/")[0], version)

    # -- cryptography ---------------------------------------------------------------

    def Encrypt(self, request: kms_v1.EncryptRequest) -> kms_v1.EncryptResponse:
        key, version, ciphertext = self.store.encrypt(
            request.name, request.plaintext, request.additional_authenticated_data
        )
        return kms_v1.EncryptResponse(
            name=_version_name(key.name, version), ciphertext=ciphertext, protection_level=_SOFTWARE
        )

    def Decrypt(self, request: kms_v1.DecryptRequest) -> kms_v1.DecryptResponse:
        key = self.store.crypto_key(request.name)
        version, plaintext = self.store.decrypt(
            request.name, request.ciphertext, request.additional_authenticated_data
        )
        return kms_v1.DecryptResponse(
            plaintext=plaintext,
            used_primary=key.primary == version.number,
            protection_level=_SOFTWARE,
        )

    # -- wiring ---------------------------------------------------------------------

    def generic_handler(self) -> Any:
        handlers = {}
        for method, (request_type, response_type) in METHODS.items():
            handlers[method] = grpc.unary_unary_rpc_method_handler(
                self._guarded(method, getattr(self, method), request_type, response_type),
                request_deserializer=request_type.deserialize,
                response_serializer=response_type.serialize,
            )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _guarded(
        self,
        method: str,
        handler: Handler,
        request_type: type[proto.Message],
        response_type: type[proto.Message],
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            if self.accounts is not None:
                metadata = dict(context.invocation_metadata())
                if not accepts(metadata.get("authorization"), self.accounts):
                    context.abort(
                        grpc.StatusCode.UNAUTHENTICATED,
                        "Request had invalid authentication credentials. Expected OAuth 2 "
                        "access token, login cookie or other valid authentication credential.",
                    )
            unknown = sorted(set(fields_set(request_type.pb(request))) - _allowed())
            if unknown:
                context.abort(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{method}: this test server does not implement {', '.join(unknown)}",
                )
            try:
                with self.store.locked():
                    response = handler(request)
            except KmsFault as fault:
                context.abort(getattr(grpc.StatusCode, fault.status.value), fault.message)
            undeclared = sorted(set(fields_set(response_type.pb(response))) - _allowed())
            if undeclared:
                log.error("%s answered with undeclared fields %s", method, undeclared)
                context.abort(grpc.StatusCode.INTERNAL, f"undeclared fields {undeclared}")
            return response

        return handle


def fields_set(message: Any) -> Iterator[str]:
    """`Message.field` for every field set in protobuf `message`, recursively (google.protobuf.*
    types are leaves)."""
    full_name = message.DESCRIPTOR.full_name
    for descriptor, value in message.ListFields():
        yield f"{full_name}.{descriptor.name}"
        if descriptor.message_type is None or descriptor.message_type.GetOptions().map_entry:
            continue
        if descriptor.message_type.full_name.startswith(_WELL_KNOWN):
            continue
        children = value if descriptor.is_repeated else [value]
        for child in children:
            yield from fields_set(child)


def _allowed() -> set[str]:
    return {f"{message}.{name}" for message, names in FIELDS.items() for name in names}


def serve(
    tls: tuple[bytes, bytes] | None = None, accounts: Mapping[str, str] | None = None
) -> tuple[list[grpc.Server], list[int]]:
    """A plaintext server on 127.0.0.1, and with `tls` (key PEM, certificate PEM) a TLS one
    taking `accounts`' tokens, over one store; kernel-chosen ports. Returns both started."""
    store = KeyStore()
    servers, ports = [], []
    plain = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    plain.add_generic_rpc_handlers((CloudKmsService(store).generic_handler(),))
    ports.append(plain.add_insecure_port("127.0.0.1:0"))
    servers.append(plain)
    if tls is not None:
        secure = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        secure.add_generic_rpc_handlers((CloudKmsService(store, accounts or {}).generic_handler(),))
        ports.append(secure.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([tls])))
        servers.append(secure)
    for server in servers:
        server.start()
    return servers, ports


def _key_ring(ring: KeyRing) -> kms_v1.KeyRing:
    return kms_v1.KeyRing(name=ring.name, create_time=ring.created)


def _crypto_key(key: CryptoKey) -> kms_v1.CryptoKey:
    body = kms_v1.CryptoKey(
        name=key.name,
        purpose=_Purpose.ENCRYPT_DECRYPT,
        create_time=key.created,
        version_template=kms_v1.CryptoKeyVersionTemplate(
            algorithm=_Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, protection_level=_SOFTWARE
        ),
        labels=key.labels,
        destroy_scheduled_duration=key.destroy_scheduled,
    )
    if key.primary is not None:
        body.primary = _version(key.name, key.versions[key.primary])
    return body


def _version_name(crypto_key: str, version: Version) -> str:
    return f"{crypto_key}/cryptoKeyVersions/{version.number}"


def _version(crypto_key: str, version: Version) -> kms_v1.CryptoKeyVersion:
    body = kms_v1.CryptoKeyVersion(
        name=_version_name(crypto_key, version),
        state=_STATES[version.state],
        protection_level=_SOFTWARE,
        algorithm=_Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        create_time=version.created,
        generate_time=version.created,
    )
    # proto-plus takes datetimes for Timestamps (its stubs say Timestamp).
    if version.destroy_time is not None:
        body.destroy_time = cast(Any, version.destroy_time)
    if version.destroyed is not None:
        body.destroy_event_time = cast(Any, version.destroyed)
    return body

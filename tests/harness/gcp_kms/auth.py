"""Service accounts for the Cloud KMS test server, and the check of their bearer tokens.

google-cloud-kms with a service-account key file does not fetch an OAuth token:
it signs a JWT itself (AIP-4111, "self-signed JWT": iss = sub = the account's
email, a `scope` claim, RS256 with the account's private key, `kid` = the key's
id) and sends it as the bearer token. The server knows each account's public
key, as Google does, and accepts a token only if the signature verifies, the
issuer is the key's account, it has not expired and it carries the Cloud KMS
(or cloud-platform) scope.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ACCEPTED_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/cloudkms",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
_MAX_LIFETIME_S = 3600 + 300  # an hour, and clock skew


@dataclass(frozen=True)
class ServiceAccount:
    email: str
    key_id: str
    private_key_pem: str = field(repr=False)

    @classmethod
    def generate(cls, project: str, name: str) -> ServiceAccount:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return cls(f"{name}@{project}.iam.gserviceaccount.com", secrets.token_hex(20), pem)

    def key_file(self, project: str) -> str:
        """The service-account key file (JSON) as the console hands it out."""
        return json.dumps(
            {
                "type": "service_account",
                "project_id": project,
                "private_key_id": self.key_id,
                "private_key": self.private_key_pem,
                "client_email": self.email,
                "client_id": str(int(self.key_id[:15], 16)),
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )

    def public_key_pem(self) -> str:
        key = serialization.load_pem_private_key(self.private_key_pem.encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


def accepts(
    authorization: str | None, public_keys: dict[str, str], now: float | None = None
) -> bool:
    """Whether `authorization` ("Bearer <JWT>") is a valid self-signed JWT of one of the
    accounts in `public_keys` (email -> PEM public key)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return False
    encoded_header, encoded_claims, encoded_signature = token.split(".")
    try:
        header = json.loads(_unb64(encoded_header))
        claims = json.loads(_unb64(encoded_claims))
        signature = _unb64(encoded_signature)
    except ValueError:
        return False
    if header.get("alg") != "RS256" or not isinstance(claims, dict):
        return False
    pem = public_keys.get(str(claims.get("iss")))
    if pem is None or claims.get("sub") != claims.get("iss"):
        return False
    public_key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public_key, rsa.RSAPublicKey)
    try:
        public_key.verify(
            signature,
            f"{encoded_header}.{encoded_claims}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return _timely(claims, now or time.time()) and bool(
        ACCEPTED_SCOPES & set(str(claims.get("scope", "")).split())
    )


def _timely(claims: dict[str, Any], now: float) -> bool:
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int) or not isinstance(expires, int):
        return False
    return issued - 300 <= now < expires and expires - issued <= _MAX_LIFETIME_S


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

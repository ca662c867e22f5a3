"""Scrubs provider error text before it reaches status, events, logs or exceptions.

SDK errors carry request ids, signed URLs, tokens and sometimes echo the
request. Backends build their messages from the error's *kind* plus this
scrubbed text, never from the raw exception alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PATTERNS = [
    # AWS / Azure / GCP request and correlation ids.
    re.compile(
        r"(?i)\b(request[ _-]?id|x-amzn-requestid|x-ms-request-id|correlation[ _-]?id|"
        r"trace[ _-]?id)\b\s*[:=]?\s*[\w-]+"
    ),
    # Bearer tokens, Vault/OpenBao tokens, AWS access key ids and signatures.
    re.compile(r"(?i)bearer\s+[\w.~+/-]+=*"),
    re.compile(r"\b(?:hvs|hvb|hvr|s|b)\.[A-Za-z0-9]{20,}\b"),
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    re.compile(
        r"(?i)(signature|x-amz-signature|x-amz-credential|x-amz-security-token|"
        r"password|secret|token|pin)\s*[=:]\s*\S+"
    ),
    # Long base64 blobs: ciphertexts, wrapped keys, plaintexts.
    re.compile(r"[A-Za-z0-9+/]{40,}={0,2}"),
]
REDACTED = "[redacted]"
MAX_LENGTH = 300


def sanitize(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with credentials, ids and blobs removed, shortened to one readable line."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_LENGTH else text[: MAX_LENGTH - 1] + "…"

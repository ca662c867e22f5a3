"""Keeps SDK debug logging out of the operator's logs.

`kopf run --verbose` sets the root logger to DEBUG. At that level botocore logs
Authorization headers and whole response bodies (GenerateDataKey plaintexts
included), the Kubernetes client logs Secret bodies, and others log request
details. keyledger's own debug lines stay; these libraries are capped.
"""

from __future__ import annotations

import logging

# Libraries whose DEBUG (and some INFO) output can carry credentials or key material.
SDK_LOGGERS = (
    "botocore",
    "boto3",
    "urllib3",
    "kubernetes",
    "hvac",
    "azure",
    "google",
    "grpc",
    "pkcs11",
    "requests",
)


def cap_sdk_logging(level: int = logging.WARNING) -> None:
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(level)

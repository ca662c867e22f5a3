"""The child process: serve Cloud KMS on 127.0.0.1 until stdin closes.

    python -m tests.harness.gcp_kms [CERT_FILE KEY_FILE ACCOUNTS_FILE]

Prints the plaintext port, and with a certificate the TLS port, which accepts
the service accounts of ACCOUNTS_FILE (JSON: email -> PEM public key).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from tests.harness.child import report_ports_and_wait
from tests.harness.gcp_kms.service import serve

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    if len(sys.argv) == 4:
        cert_file, key_file, accounts_file = (Path(arg) for arg in sys.argv[1:4])
        servers, ports = serve(
            (key_file.read_bytes(), cert_file.read_bytes()),
            json.loads(accounts_file.read_text()),
        )
    else:
        servers, ports = serve()
    try:
        report_ports_and_wait(*ports)
    finally:
        for server in servers:
            server.stop(grace=None)

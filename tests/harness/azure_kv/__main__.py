"""The child process: serve Key Vault and Entra on 127.0.0.1 until stdin closes.

python -m tests.harness.azure_kv CERT_FILE KEY_FILE TENANT_ID CLIENT_ID
(the client secret in the environment, not on the command line)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

from tests.harness.azure_kv import SECRET_ENV
from tests.harness.azure_kv.server import serve
from tests.harness.child import report_ports_and_wait

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    cert_file, key_file, tenant, client = sys.argv[1:5]
    httpd, port = serve((tenant, client, os.environ[SECRET_ENV]), Path(cert_file), Path(key_file))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        report_ports_and_wait(port)
    finally:
        httpd.shutdown()

"""The child process: serve Cloud KMS on 127.0.0.1 until stdin closes."""

from __future__ import annotations

import logging

from tests.harness.child import report_port_and_wait
from tests.harness.gcp_kms.service import serve

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    server, port = serve()
    try:
        report_port_and_wait(port)
    finally:
        server.stop(grace=None)

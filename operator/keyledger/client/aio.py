"""AsyncKeyledgerClient: the same client for asyncio services (FastAPI and friends).

The ledger is read with SQLAlchemy's blocking engine and most KMS SDKs have no
async API, so every call runs in a thread pool: the event loop never waits on
the ledger, the KMS or a large AES-GCM. Behaviour, caches, errors and ledger
notifications are the sync client's own: one KeyledgerClient does the work.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import ParamSpec, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from keyledger.client.breakglass import BreakGlass
from keyledger.client.cache import CacheLimits
from keyledger.client.client import KeyledgerClient
from keyledger.client.envelope import Blob, Context
from keyledger.client.stream import SEGMENT_BYTES, Readable, Writable
from keyledger.client.usage import UsageRecorder
from keyledger.providers.base import KeyBackend

P = ParamSpec("P")
T = TypeVar("T")


class AsyncKeyledgerClient:
    """`max_threads` bounds the calls in flight at once (each holds a thread)."""

    def __init__(
        self,
        ledger: str | sessionmaker[Session],
        backends: Sequence[KeyBackend],
        *,
        limits: CacheLimits | None = None,
        service: str | None = None,
        version_check_s: float = 2.0,
        usage_flush_s: float = 60.0,
        listen: bool = True,
        max_threads: int = 8,
    ) -> None:
        self._client = KeyledgerClient(
            ledger,
            backends,
            limits=limits,
            service=service,
            version_check_s=version_check_s,
            usage_flush_s=usage_flush_s,
            listen=listen,
        )
        self._max_threads = max_threads
        self._threads: ThreadPoolExecutor | None = None

    @property
    def usage(self) -> UsageRecorder:
        return self._client.usage

    async def encrypt(
        self, tenant: str, key_name: str, plaintext: bytes, context: Context | None = None
    ) -> bytearray:
        return await self._run(self._client.encrypt, tenant, key_name, plaintext, context)

    async def decrypt(
        self,
        blob: Blob,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> bytes:
        return await self._run(
            self._client.decrypt, blob, context, tenant=tenant, break_glass=break_glass
        )

    async def rewrap(
        self,
        blob: Blob,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> Blob:
        return await self._run(
            self._client.rewrap, blob, context, tenant=tenant, break_glass=break_glass
        )

    async def encrypt_stream(
        self,
        tenant: str,
        key_name: str,
        src: Readable,
        dst: Writable,
        context: Context | None = None,
        *,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> int:
        """`src` and `dst` are blocking file-like objects, used from one pool thread."""
        return await self._run(
            self._client.encrypt_stream,
            tenant,
            key_name,
            src,
            dst,
            context,
            segment_bytes=segment_bytes,
        )

    async def decrypt_stream(
        self,
        src: Readable,
        dst: Writable,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> int:
        return await self._run(
            self._client.decrypt_stream,
            src,
            dst,
            context,
            tenant=tenant,
            break_glass=break_glass,
        )

    async def rewrap_stream(
        self,
        src: Readable,
        dst: Writable,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> bool:
        return await self._run(
            self._client.rewrap_stream,
            src,
            dst,
            context,
            tenant=tenant,
            break_glass=break_glass,
        )

    async def listening(self, timeout: float = 0.0) -> bool:
        return await self._run(self._client.listening, timeout)

    async def aclose(self) -> None:
        """As KeyledgerClient.close: the client may still be used afterwards."""
        await self._run(self._client.close)
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False)

    async def __aenter__(self) -> AsyncKeyledgerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                self._max_threads, thread_name_prefix="keyledger-client"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(call, *args, **kwargs))

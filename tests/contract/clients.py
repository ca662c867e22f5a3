"""The sync and the async client behind one face, so one contract suite runs on both."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from keyledger.client import AsyncKeyledgerClient, BreakGlass
from keyledger.client.envelope import Blob, Context
from keyledger.client.stream import Readable, Writable
from keyledger.client.usage import UsageRecorder

T = TypeVar("T")


class Client(Protocol):
    @property
    def usage(self) -> UsageRecorder: ...

    def encrypt(
        self, tenant: str, key_name: str, plaintext: bytes, context: Context | None = None
    ) -> bytearray: ...

    def decrypt(
        self,
        blob: Blob,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> bytes: ...

    def rewrap(
        self,
        blob: Blob,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> Blob: ...

    def encrypt_stream(
        self,
        tenant: str,
        key_name: str,
        src: Readable,
        dst: Writable,
        context: Context | None = None,
        *,
        segment_bytes: int = ...,
    ) -> int: ...

    def decrypt_stream(
        self,
        src: Readable,
        dst: Writable,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> int: ...

    def rewrap_stream(
        self,
        src: Readable,
        dst: Writable,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> bool: ...

    def close(self) -> None: ...


class AsyncDriven:
    """AsyncKeyledgerClient called from test code: one event loop in a thread runs every
    call, so calls from many test threads are coroutines on one loop, as in a service."""

    def __init__(self, client: AsyncKeyledgerClient) -> None:
        self._client = client
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def usage(self) -> UsageRecorder:
        return self._client.usage

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def encrypt(
        self, tenant: str, key_name: str, plaintext: bytes, context: Context | None = None
    ) -> bytearray:
        return self._call(self._client.encrypt(tenant, key_name, plaintext, context))

    def decrypt(
        self,
        blob: Blob,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> bytes:
        return self._call(
            self._client.decrypt(blob, context, tenant=tenant, break_glass=break_glass)
        )

    def rewrap(
        self,
        blob: Blob,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> Blob:
        return self._call(
            self._client.rewrap(blob, context, tenant=tenant, break_glass=break_glass)
        )

    def encrypt_stream(
        self,
        tenant: str,
        key_name: str,
        src: Readable,
        dst: Writable,
        context: Context | None = None,
        *,
        segment_bytes: int = 1 << 20,
    ) -> int:
        return self._call(
            self._client.encrypt_stream(
                tenant, key_name, src, dst, context, segment_bytes=segment_bytes
            )
        )

    def decrypt_stream(
        self,
        src: Readable,
        dst: Writable,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> int:
        return self._call(
            self._client.decrypt_stream(src, dst, context, tenant=tenant, break_glass=break_glass)
        )

    def rewrap_stream(
        self,
        src: Readable,
        dst: Writable,
        context: Context | None = None,
        *,
        tenant: str,
        break_glass: BreakGlass | None = None,
    ) -> bool:
        return self._call(
            self._client.rewrap_stream(src, dst, context, tenant=tenant, break_glass=break_glass)
        )

    def close(self) -> None:
        self._call(self._client.aclose())

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

"""Everything a command needs, passed explicitly: config, streams, clock, client.

Tests build a `Ctx` with string streams, a fake clock and a client factory
pointing at an in-process server; `main` builds the real one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

import grpc

from cowpod.auth.config import ConnectionSettings
from cowpod.auth.credentials import connect
from cowpod.cli.errors import rpc_error
from cowpod.cli.safe_text import raw_stream
from cowpod.client import Client
from cowpod.clock import Clock, RealClock
from cowpod.config import CliConfig

T = TypeVar("T")

# One CLI call should not hang forever on a stuck controller.
DEFAULT_TIMEOUT = 30.0


@dataclass
class Ctx:
    config: CliConfig
    out: TextIO
    err: TextIO
    stdin: TextIO
    env: Mapping[str, str] = field(default_factory=dict)
    clock: Clock = field(default_factory=RealClock)
    # Opens the channel (TLS and credentials from the settings); tests pass their own.
    client_factory: Callable[[ConnectionSettings], Client] = connect
    _client: Client | None = None

    @property
    def namespace(self) -> str:
        return self.config.namespace

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self.client_factory(self.config.connection)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def now(self) -> float:
        return self.clock.now()

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def write_bytes(self, data: bytes, *, err: bool = False) -> None:
        # Raw: a container's own output, as the user asked for it (not a PrintableWriter).
        stream = raw_stream(self.err if err else self.out)
        buffer: Any = getattr(stream, "buffer", None)
        if buffer is not None:
            stream.flush()
            buffer.write(data)
            buffer.flush()
        else:
            stream.write(data.decode(errors="replace"))
        stream.flush()

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        request: Any,
        *,
        what: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        retry: bool = False,
    ) -> T:
        """One unary call; a failure becomes a one-line CliError naming `what`.

        `retry` (reads only) rides out a controller restart with a few quick
        retries; writes are sent once so they are never applied twice.
        """
        try:
            if retry:
                return await self.client.call(fn, request, timeout=timeout, attempts=3, max_delay=1.0)
            return await fn(request, timeout=timeout)
        except grpc.RpcError as e:
            raise rpc_error(e, address=self.config.controller, what=what) from e

"""The host end of the guest channel (virtio-serial port `org.cowpod.guest`).

Newline-delimited JSON, the contract with the guest's init:

    guest -> host  {"event": "warm"}          re-sent every second until the host writes;
                                              dockerd up, images loaded, agent imported, no identity
    host -> guest  {"bootstrap": "<GuestBootstrap.to_b64()>", "now": <host epoch seconds>}
    guest -> host  {"event": "started", "node": ..., "machine_id": ..., ["previous": ...]}
                   | {"event": "error", "message": ...}

The identity travels only here, after the fork: a template's snapshot never
holds a node name, and each clone's process has its own socket, so two clones
can never read each other's bootstrap. A clone of a VM that already was a node
is sent its own (different) bootstrap like any clone; its guest drops the
parent's node and says which in `previous` (guestinit.GuestInit.forget_node).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import time
from typing import Any

from cowpod.errors import FailedPrecondition
from hypervisor.guest import GuestBootstrap


class Channel:
    def __init__(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._name = name
        self._reader = reader
        self._writer = writer

    @staticmethod
    async def open(name: str, vm_dir: pathlib.Path) -> Channel:
        reader, writer = await asyncio.open_unix_connection(str(vm_dir / "guest.sock"))
        return Channel(name, reader, writer)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def event(self) -> dict[str, Any]:
        """The next event the guest sends; lines that are not JSON objects are skipped."""
        while True:
            line = await self._reader.readline()
            if not line:
                raise FailedPrecondition(f"vm {self._name!r}: the guest channel closed (QEMU exited?)")
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and "event" in msg:
                    return msg

    async def until(self, wanted: str, timeout: float) -> dict[str, Any]:
        """Wait for event `wanted`; an `error` event or the timeout is FailedPrecondition."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await self.event()
                    if msg["event"] == wanted:
                        return msg
                    if msg["event"] == "error":
                        raise FailedPrecondition(f"vm {self._name!r}: guest: {msg.get('message', msg)}")
        except TimeoutError:
            raise FailedPrecondition(
                f"vm {self._name!r}: no {wanted!r} from the guest in {timeout:.0f}s (see its console.log)"
            ) from None

    async def send_bootstrap(self, guest: GuestBootstrap) -> None:
        line = json.dumps({"bootstrap": guest.to_b64(), "now": time.time()}) + "\n"
        self._writer.write(line.encode())
        await self._writer.drain()

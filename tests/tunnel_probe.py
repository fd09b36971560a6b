"""A tunnel's control channel driven by hand: what a node's key (not the agent) may send.

Security and end-to-end tests hold the tunnel with the node's key (``as_the_node``) and use
``Probe`` to say hello and send messages, well formed or not, reading the proxy's answers.
The policy the proxy pushes whenever it likes (``PolicyUpdate``) is kept apart, in
``policies``, so that it never stands in for the answer a test waits for.
"""

import asyncio
import contextlib
import itertools
from typing import Any

import asyncssh

from jumpgate.protocol.tunnel import CONTROL_SUBSYSTEM
from jumpgate.protocol.tunnel_messages import (
    PROTOCOL_VERSIONS,
    Hello,
    Message,
    MessageError,
    PolicyUpdate,
    decode,
    encode,
)


class Probe:
    """One control channel: ``open`` says hello; answers are matched to requests by id."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.unmatched: asyncio.Queue[Message | None] = asyncio.Queue()
        self.policies: asyncio.Queue[PolicyUpdate] = asyncio.Queue()
        self.order: list[str] = []  # the type of every message read, in turn
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1000)
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, conn: asyncssh.SSHClientConnection, versions: tuple[int, ...] = PROTOCOL_VERSIONS
    ) -> tuple["Probe", Message | None]:
        """A probe past its hello, and the proxy's answer to it (None: the channel ended)."""
        process = await conn.create_process(subsystem=CONTROL_SUBSYSTEM, encoding="utf-8")
        process.stdin.write(encode(Hello(versions=list(versions))).decode())
        probe = cls(process)
        return probe, await probe.next()

    async def _read(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            async for line in self.process.stdout:
                if not line.strip():
                    continue
                try:
                    message = decode(line)
                except MessageError:
                    continue
                self.order.append(message.type)
                if isinstance(message, PolicyUpdate):
                    await self.policies.put(message)
                    continue
                found = getattr(message, "id", None)
                waiting = self._waiting.pop(found, None) if found is not None else None
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
                else:
                    await self.unmatched.put(message)
        await self.unmatched.put(None)
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(EOFError("the control channel ended"))

    async def next(self, timeout: float = 15) -> Message | None:
        """The next message not answering a request (None once the channel ended)."""
        return await asyncio.wait_for(self.unmatched.get(), timeout)

    async def next_policy(self, timeout: float = 15) -> PolicyUpdate:
        """The next policy the proxy pushed."""
        return await asyncio.wait_for(self.policies.get(), timeout)

    def new_id(self) -> int:
        return next(self._ids)

    def write(self, line: str) -> None:
        self.process.stdin.write(line)

    def send(self, message: Any) -> None:
        self.write(encode(message).decode())

    async def request(self, message: Any, timeout: float = 30) -> Message:
        """Send ``message`` (it has an ``id``); the answer with that id."""
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[message.id] = answer
        self.send(message)
        return await asyncio.wait_for(answer, timeout)

    async def close(self) -> int | None:
        """End the channel; its exit status."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.write_eof()
        try:
            result = await asyncio.wait_for(self.process.wait(check=False), 10)
        finally:
            self._reader.cancel()
        status: int | None = result.exit_status
        return status

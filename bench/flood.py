"""A flood of bad logins against one tenant, for the noisy-neighbour benchmark and tests.

Each client keeps one bad ``/v1/login`` in flight (TLS, ``Connection: close``): it sends,
waits for the answer, and sends again, for ``rounds`` rounds or until stopped. Clients come
from their own loopback address (127.1.x.y) with their own user name, so no per-address or
per-user limit spares the platform a bcrypt check, or all from 127.0.0.1 as one user. The
flood runs on its own event loop in a thread and stops by itself after ``seconds``.
"""

import asyncio
import collections
import json
import os
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.protocol import certs

PUBLIC_KEY = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
ANSWERS_KEPT = 1000
"""Answers kept whole (status, headers, body) for a test to read; all are counted."""
STOP_SECONDS = 20.0
"""Once stopped, how long the clients' logins in flight are given to be answered."""


@dataclass(frozen=True)
class Answer:
    """One login's answer as the client read it."""

    status: int  # the HTTP status; 0 when there was no answer (refused, reset, malformed)
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any]  # the JSON body, {} if none


def _answer(raw: bytes) -> Answer:
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    first = lines[0].split()
    status = int(first[1]) if raw.startswith(b"HTTP/") and len(first) > 1 else 0
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    try:
        body = json.loads(payload) if payload else {}
    except ValueError:
        body = {}
    return Answer(status, headers, body if isinstance(body, dict) else {})


@dataclass
class LoginFlood:
    """``count`` clients flooding ``tenant``'s logins on the platform's HTTPS ``port``."""

    port: int
    tenant: str
    count: int
    rounds: int | None = None  # logins per client; None: until ``stop`` or ``seconds``
    same_source: bool = False  # all from 127.0.0.1 as one user, or each its own
    niceness: int = 0  # the flood's thread priority (a remote attacker's CPU is not ours)
    seconds: float = 90.0  # the flood gives up after this long, answered or not
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    answers: list[Answer] = field(default_factory=list)  # the first ANSWERS_KEPT
    unanswered: int = 0  # logins still waiting when the flood stopped
    in_flight: int = 0  # logins sent and not yet answered
    samples: list[int] = field(default_factory=list)  # ``in_flight`` as noted by ``sample``
    stop: threading.Event = field(default_factory=threading.Event)
    sent: threading.Event = field(default_factory=threading.Event)  # every client's first
    done: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> int:
        """Note how many logins are in flight now (e.g. as another client starts)."""
        self.samples.append(self.in_flight)
        return self.in_flight

    def _request(self, n: int) -> bytes:
        user = "mallory" if self.same_source else f"mallory{n}"
        body = json.dumps(
            {"user": user, "password": "wrong password", "otp": "123456", "public_key": PUBLIC_KEY}
        )
        return (
            f"POST /v1/login HTTP/1.1\r\nHost: {self.tenant}.localhost:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n{body}"
        ).encode()

    async def _login(self, source: str, request: bytes, context: ssl.SSLContext) -> Answer:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                self.port,
                ssl=context,
                server_hostname=f"{self.tenant}.localhost",
                local_addr=(source, 0),
            )
        except (OSError, ssl.SSLError):
            return Answer(0, {}, {})
        try:
            writer.write(request)
            await writer.drain()
            self.in_flight += 1
            try:
                raw = await reader.read()
            finally:
                self.in_flight -= 1
        except (OSError, ssl.SSLError):
            return Answer(0, {}, {})
        finally:
            writer.transport.abort()  # answered or given up: no TLS goodbye to wait for
        return _answer(raw)

    async def _client(self, n: int, context: ssl.SSLContext) -> None:
        source = "127.0.0.1" if self.same_source else f"127.1.{n // 250}.{n % 250 + 1}"
        request = self._request(n)
        done = 0
        while not self.stop.is_set() and (self.rounds is None or done < self.rounds):
            answer = await self._login(source, request, context)
            done += 1
            self.statuses[answer.status] += 1
            if len(self.answers) < ANSWERS_KEPT:
                self.answers.append(answer)
            if answer.status == 0:
                await asyncio.sleep(0.1)  # refused: no busy loop

    async def _all(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        clients = [asyncio.create_task(self._client(n, context)) for n in range(self.count)]
        await asyncio.sleep(0)  # every client's connection is under way
        self.sent.set()
        ended = asyncio.ensure_future(asyncio.wait(clients))
        stopped = asyncio.ensure_future(asyncio.to_thread(self.stop.wait, self.seconds))
        await asyncio.wait([ended, stopped], return_when=asyncio.FIRST_COMPLETED)
        self.stop.set()
        self.unanswered = self.in_flight
        # Each client ends after its login in hand: one cancelled in its TLS handshake would
        # leave its socket to the garbage collector once this loop is closed (a
        # ResourceWarning in whatever test runs next). Those still waiting after a while
        # (a login held by the platform) are cancelled, and their transports given a
        # moment to close before the loop does.
        await asyncio.wait([ended], timeout=STOP_SECONDS)
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await asyncio.sleep(0.5)
        await stopped

    def _run(self) -> None:
        if self.niceness:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.niceness)
        try:
            asyncio.run(self._all())
        finally:
            self.sent.set()
            self.done.set()

    def wait_in_flight(self, seconds: float) -> bool:
        """Whether logins are in flight within ``seconds``: ``sent`` says the clients were
        started, and on a loaded machine their TLS handshakes can take seconds more."""
        deadline = time.monotonic() + seconds
        while self.in_flight == 0 and not self.done.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.in_flight > 0

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        return thread

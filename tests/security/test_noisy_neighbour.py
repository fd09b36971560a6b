"""One tenant cannot starve another (issue 14, item 4).

The attack as found: 300 concurrent unauthenticated ``/v1/login`` calls against tenant A made
tenant B's ``jump ssh`` fail, because every control-plane call (the proxy's own session checks
included) queued behind one lock while logins ran bcrypt. Here the attack comes from 300
loopback addresses (127.1.x.y) with 300 user names, so no per-source or per-user limit
spares the platform the work: only the per-tenant share and the proxy's own executor do.
Then the limits themselves: a burst from one address is answered 429 with ``Retry-After``,
and the refusal is in the tenant's audit log.
"""

import asyncio
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.protocol import certs
from tests.e2e.conftest import Site, audit_events, cluster, create_tenant, site

__all__ = ["cluster", "site"]  # the e2e fixtures, used here as they are

pytestmark = [pytest.mark.e2e, pytest.mark.net]

ATTACKERS = 300
ATTACK_SECONDS = 90.0
"""The attack gives up on answers after this long, so the test stops by itself."""
PUBLIC_KEY = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())


@dataclass
class Attack:
    """Concurrent bad logins against one tenant, on their own event loop in a thread."""

    port: int
    tenant: str
    count: int
    same_source: bool = False  # all from 127.0.0.1 and for one user, or spread out
    statuses: list[int] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    sent: threading.Event = field(default_factory=threading.Event)

    async def _one(self, n: int, context: ssl.SSLContext) -> None:
        source = "127.0.0.1" if self.same_source else f"127.1.{n // 250}.{n % 250 + 1}"
        user = "mallory" if self.same_source else f"mallory{n}"
        body = json.dumps(
            {
                "user": user,
                "password": "wrong password",
                "otp": "123456",
                "public_key": PUBLIC_KEY,
            }
        )
        request = (
            f"POST /v1/login HTTP/1.1\r\nHost: {self.tenant}.localhost:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n{body}"
        ).encode()
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                self.port,
                ssl=context,
                server_hostname=f"{self.tenant}.localhost",
                local_addr=(source, 0),
            )
            writer.write(request)
            await writer.drain()
            raw = await reader.read()
            writer.close()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            self.statuses.append(0)
            return
        head, _, payload = raw.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        self.statuses.append(status)
        try:
            parsed = json.loads(payload) if payload else {}
        except ValueError:
            parsed = {}
        self.answers.append((status, headers, parsed))

    async def _all(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        tasks = [asyncio.create_task(self._one(n, context)) for n in range(self.count)]
        await asyncio.sleep(0)
        self.sent.set()
        _, pending = await asyncio.wait(tasks, timeout=ATTACK_SECONDS)
        for task in pending:
            task.cancel()
        self.statuses.extend([-1] * len(pending))

    def run(self) -> None:
        try:
            asyncio.run(self._all())
        finally:
            self.sent.set()
            self.done.set()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread


def _timed_ssh(site: Site) -> tuple[float, int, str]:
    began = time.monotonic()
    result = site.admin.run("jump", "ssh", "web-1", "true")
    return time.monotonic() - began, result.code, result.err.strip()


@pytest.mark.timeout(300)
def test_logins_flooding_one_tenant_leave_another_tenants_sessions_alone(site: Site) -> None:
    """Tenant B (acme, with node web-1) keeps working while 300 concurrent bad logins from
    300 addresses hit tenant A (noisy): no failure, each ``jump ssh`` under 5 s."""
    create_tenant(site.admin, site.cluster, "noisy", "nadia")
    assert _timed_ssh(site)[1] == 0  # warm: B works before the attack
    attack = Attack(site.cluster.port, "noisy", ATTACKERS)
    thread = attack.start()
    attack.sent.wait(10)
    time.sleep(1.0)  # the logins are in: connections made, bodies sent, bcrypt running
    runs = []
    for _ in range(5):
        runs.append(_timed_ssh(site))
    overlapped = not attack.done.is_set()
    thread.join(ATTACK_SECONDS + 30)
    failures = [(code, err) for _, code, err in runs if code != 0]
    took = [round(seconds, 2) for seconds, _, _ in runs]
    assert failures == [], f"tenant B's jump ssh failed under A's login flood: {failures}"
    assert max(took) < 5.0, f"tenant B's jump ssh took {took} s under A's login flood"
    assert overlapped, "the attack ended before B's sessions did: nothing was measured"
    # The flood was real: bad logins checked (401), none failed; on a slow machine some may
    # still wait in A's share when the attack gives up on them (-1).
    assert set(attack.statuses) <= {401, -1}, f"answers to A's logins: {set(attack.statuses)}"
    assert attack.statuses.count(401) >= 50


@pytest.mark.timeout(180)
def test_a_burst_of_logins_from_one_address_is_refused_429_and_audited(site: Site) -> None:
    """One address, one user, 60 concurrent bad logins: beyond the per-source burst (and the
    per-user allowance) the proxy answers 429 problem+json with Retry-After, without running
    them, and the tenant's audit log says so."""
    attack = Attack(site.cluster.port, "acme", 60, same_source=True)
    thread = attack.start()
    thread.join(ATTACK_SECONDS + 30)
    limited = [(headers, body) for status, headers, body in attack.answers if status == 429]
    assert limited, f"no login was refused 429: statuses {sorted(set(attack.statuses))}"
    assert len(limited) >= 30, f"only {len(limited)} of 60 refused"
    headers, body = limited[0]
    assert int(headers["retry-after"]) >= 1
    assert headers["content-type"].startswith("application/problem+json")
    assert body["type"] == "urn:jumpgate:problem:rate-limited"
    assert body["status"] == 429
    assert "try again in" in body["detail"]
    assert set(attack.statuses) <= {401, 403, 429}
    events = audit_events(site, "user.login.limited", 1)
    assert events, "the rate-limited logins are not in the audit log"
    event = events[0]
    assert event["remote_addr"] == "127.0.0.1"
    assert event["user"] == "mallory"
    assert event["code"] == "J1008W"
    assert event["success"] is False

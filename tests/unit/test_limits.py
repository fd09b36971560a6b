"""The proxy's capacity limits: token buckets, the login guard, each tenant's share."""

import asyncio
import json
import threading
from typing import Any

import pytest

from jumpgate.edge_proxy.events import Event
from jumpgate.edge_proxy.limits import (
    UNKNOWN_TENANT_AUDITS,
    Admission,
    LoginGuard,
    Refusal,
    TokenBuckets,
    source_key,
    unsigned,
)
from jumpgate.edge_proxy.tenant_share import TenantBusy, TenantShare, lane_of
from jumpgate.protocol.audit import EventType


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _login(user: str) -> bytes:
    return json.dumps({"user": user, "password": "x", "otp": "1", "public_key": "k"}).encode()


def test_a_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # another key has its own bucket
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    buckets.give_back("a")
    assert buckets.take("a") == 0.0


def test_a_rate_of_zero_limits_nothing() -> None:
    buckets = TokenBuckets(rate=0, burst=1)
    assert all(buckets.take("a") == 0.0 for _ in range(100))


def test_buckets_forget_the_least_recently_used_keys_beyond_their_capacity() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, capacity=10, clock=Clock())
    for n in range(1000):
        buckets.take(str(n))
    assert len(buckets._buckets) == 10


def _guard(clock: Clock, events: list[tuple[Any, ...]]) -> LoginGuard:
    return LoginGuard(
        "localhost",
        per_source=TokenBuckets(10, 20, clock=clock),
        per_user=TokenBuckets(5 / 60, 5, clock=clock),
        record=lambda *args, **fields: events.append((*args, fields)),
        clock=clock,
    )


def test_failures_beyond_the_users_allowance_are_refused_and_audited_once() -> None:
    clock, events = Clock(), list[tuple[Any, ...]]()
    guard = _guard(clock, events)
    verdicts = [guard.admit("10.0.0.1", "acme.localhost:3080", _login("alice")) for _ in range(8)]
    admitted = [v for v in verdicts if isinstance(v, Admission)]
    refused = [v for v in verdicts if isinstance(v, Refusal)]
    assert len(admitted) == 5
    assert len(refused) == 3
    assert refused[0].retry_after == 12  # 5 a minute: one more in 12 s
    assert "for user 'alice'" in refused[0].detail
    assert len(events) == 1
    event_type, tenant, outcome, fields = events[0]
    assert (event_type, tenant, outcome) == (EventType.USER_LOGIN_LIMITED, "acme", "W")
    assert fields["user"] == "alice"
    assert fields["remote_addr"] == "10.0.0.1"
    assert fields["limit"] == "user"
    clock.now += 61
    assert isinstance(guard.admit("10.0.0.1", "acme.localhost", _login("alice")), Admission)
    for _ in range(5):
        guard.admit("10.0.0.1", "acme.localhost", _login("alice"))
    assert len(events) == 2
    assert events[1][3]["refused"] == 3  # the refusals since the last event are counted


@pytest.mark.parametrize(
    "body",
    [
        b'{"user": "\\ud800poison", "password": "x"}',
        json.dumps({"user": "\udcff" + "u" * 5000}).encode(),
    ],
    ids=["lone-surrogate", "long-with-surrogate"],
)
def test_the_limited_users_name_is_audited_as_text_any_store_keeps(body: bytes) -> None:
    """Issue 14 round 2, finding 1: a name UTF-8 cannot encode made an event no store took,
    and it held up every later event of the proxy."""
    clock, events = Clock(), list[tuple[Any, ...]]()
    guard = _guard(clock, events)
    refused = [guard.admit("10.0.0.1", "acme.localhost", body) for _ in range(6)][-1]
    assert isinstance(refused, Refusal)
    [(_, _, _, fields)] = events
    assert fields["user"].encode() == fields["user"].encode("utf-8", "strict")
    assert fields["user"].startswith(("\\ud800poison", "\\udcffuuu"))
    assert len(fields["user"]) <= 128


def test_refusals_for_tenants_never_seen_to_exist_are_audited_within_a_small_budget() -> None:
    """Issue 14 round 2, finding 11: past the address's burst, a login to a new made-up
    tenant each time queued one event per name (the once-a-minute grouping is per tenant).
    Events of tenants this proxy never saw answer a login share one small budget, so they
    cannot crowd real tenants' events out of the outbox; a tenant whose login was answered
    as one that exists (401) is audited as before."""
    clock, events = Clock(), list[tuple[Any, ...]]()
    guard = _guard(clock, events)
    passed = guard.admit("10.0.0.1", "acme.localhost", _login("alice"))
    assert isinstance(passed, Admission)
    guard.settle(passed, 401)  # a wrong password: acme exists
    for n in range(300):
        guard.admit("10.0.0.1", f"t{n:04d}.localhost", _login("x"))
    made_up = [e for e in events if e[1] != "acme"]
    assert 0 < len(made_up) <= UNKNOWN_TENANT_AUDITS
    guard.admit("10.0.0.1", "acme.localhost", _login("alice"))
    assert [e[1] for e in events].count("acme") == 1


def test_a_successful_login_gives_its_tokens_back() -> None:
    clock, events = Clock(), list[tuple[Any, ...]]()
    guard = _guard(clock, events)
    for _ in range(50):
        verdict = guard.admit("10.0.0.1", "acme.localhost", _login("alice"))
        assert isinstance(verdict, Admission)
        guard.settle(verdict, 200)
    assert events == []


def test_one_address_is_held_to_its_rate_across_users_and_tenants() -> None:
    clock, events = Clock(), list[tuple[Any, ...]]()
    guard = _guard(clock, events)
    verdicts = [
        guard.admit("10.0.0.9", f"t{n % 3}.localhost", _login(f"user{n}")) for n in range(30)
    ]
    refused = [v for v in verdicts if isinstance(v, Refusal)]
    assert len(refused) == 10
    assert refused[0].retry_after == 1
    assert "from 10.0.0.9" in refused[0].detail
    assert {e[1] for e in events} <= {"t0", "t1", "t2"}


def test_a_host_outside_the_public_address_is_limited_but_not_audited() -> None:
    clock, events = Clock(), list[tuple[Any, ...]]()
    guard = _guard(clock, events)
    verdicts = [guard.admit("10.0.0.1", "evil.example", b"not json") for _ in range(25)]
    assert sum(isinstance(v, Refusal) for v in verdicts) == 5
    assert events == []


def test_a_deeply_nested_login_body_counts_against_its_address() -> None:
    """Finding 10: ``json.loads`` raises ``RecursionError`` (not a ``ValueError``) on deep
    nesting; it escaped before the per-address limit, so such a flood was never refused."""
    clock, events = Clock(), list[tuple[Any, ...]]()
    guard = _guard(clock, events)
    deep = b"[" * 30000 + b"]" * 30000
    verdicts = [guard.admit("10.0.0.7", "acme.localhost", deep) for _ in range(25)]
    assert sum(isinstance(v, Refusal) for v in verdicts) == 5


def test_each_tenant_holds_at_most_its_share_of_calls() -> None:
    async def scenario() -> tuple[dict[str, int], list[str]]:
        running: dict[str, int] = {}
        peak: dict[str, int] = {}
        order: list[str] = []
        release = asyncio.Event()

        async def invoke(event: Event) -> Event:
            tenant = event["headers"]["host"].split(".")[0]
            running[tenant] = running.get(tenant, 0) + 1
            peak[tenant] = max(peak.get(tenant, 0), running[tenant])
            if tenant == "noisy":
                await release.wait()
            order.append(tenant)
            running[tenant] -= 1
            return {"statusCode": 200}

        share = TenantShare(invoke, "localhost", per_tenant=2, per_source=64)  # one source
        noisy = [
            asyncio.create_task(share({"headers": {"host": "noisy.localhost:3080"}}))
            for _ in range(50)
        ]
        await asyncio.sleep(0.01)
        assert share.waiting("noisy") == 50
        quiet = await asyncio.wait_for(share({"headers": {"host": "quiet.localhost"}}), 1)
        assert quiet == {"statusCode": 200}
        release.set()
        await asyncio.gather(*noisy)
        assert share.waiting("noisy") == 0
        assert share._slots == {}
        return peak, order

    peak, order = asyncio.run(scenario())
    assert peak == {"noisy": 2, "quiet": 1}
    assert order[0] == "quiet"  # served while 48 of noisy's calls still waited


def test_closing_the_share_ends_the_calls_still_waiting_for_their_turn() -> None:
    async def scenario() -> list[Any]:
        release = asyncio.Event()

        async def invoke(event: Event) -> Event:
            await release.wait()
            return {"statusCode": 200}

        share = TenantShare(invoke, "localhost", per_tenant=1)
        calls = [
            asyncio.create_task(share({"headers": {"host": "noisy.localhost"}})) for _ in range(5)
        ]
        await asyncio.sleep(0.01)
        share.close()
        release.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        late = await asyncio.gather(
            share({"headers": {"host": "b.localhost"}}), return_exceptions=True
        )
        return [*results, *late]

    results = asyncio.run(scenario())
    assert results[0] == {"statusCode": 200}  # the one running finishes
    assert all(isinstance(r, asyncio.CancelledError) for r in results[1:5])
    assert "stopping" in str(results[5])


def _call(host: str, method: str = "GET", path: str = "/v1/trust") -> Event:
    return {
        "headers": {"host": host},
        "rawPath": path,
        "requestContext": {"http": {"method": method}},
    }


def test_logins_and_signups_run_in_a_lane_of_their_own() -> None:
    assert lane_of(_call("a.localhost", "POST", "/v1/login")) == "login"
    assert lane_of(_call("a.localhost", "post", "/v1/signup")) == "login"
    assert lane_of(_call("a.localhost", "GET", "/v1/login")) == "api"
    assert lane_of(_call("a.localhost", "POST", "/v1/join")) == "api"
    assert lane_of(_call("a.localhost", "GET", "/v1/trust")) == "api"
    assert lane_of({"headers": {}}) == "api"


def test_a_tenants_other_calls_do_not_wait_behind_its_logins() -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def invoke(event: Event) -> Event:
            if event["rawPath"] == "/v1/login":
                await release.wait()
            return {"statusCode": 200}

        share = TenantShare(
            invoke, "localhost", per_tenant=2, login_per_tenant=1, queue=10, per_source=64
        )
        logins = [
            asyncio.create_task(share(_call("acme.localhost", "POST", "/v1/login")))
            for _ in range(11)
        ]
        await asyncio.sleep(0.01)
        assert share.waiting("acme", "login") == 11
        trust = await asyncio.wait_for(share(_call("acme.localhost")), 1)
        assert trust == {"statusCode": 200}
        release.set()
        await asyncio.gather(*logins)

    asyncio.run(scenario())


def test_a_full_lane_refuses_at_once_and_takes_calls_again_once_it_drains() -> None:
    async def scenario() -> list[Any]:
        release = asyncio.Event()

        async def invoke(event: Event) -> Event:
            await release.wait()
            return {"statusCode": 200}

        share = TenantShare(invoke, "localhost", per_tenant=2, login_per_tenant=1, queue=3)
        login = _call("acme.localhost", "POST", "/v1/login")
        held = [asyncio.create_task(share(login)) for _ in range(4)]  # 1 running, 3 waiting
        await asyncio.sleep(0.01)
        refused = list(await asyncio.gather(share(login), return_exceptions=True))
        other = asyncio.create_task(share(_call("other.localhost", "POST", "/v1/login")))
        await asyncio.sleep(0.01)
        assert share.waiting("other", "login") == 1  # another tenant's lane is its own
        release.set()
        results = await asyncio.gather(*held, other)
        again = await share(login)
        return [*refused, *results, again]

    results = asyncio.run(scenario())
    assert isinstance(results[0], TenantBusy)
    assert results[0].refusal.retry_after >= 1
    assert "try again" in results[0].refusal.detail
    assert results[1:] == [{"statusCode": 200}] * 6


def test_sources_are_keyed_on_the_ipv4_address_or_the_ipv6_slash_64() -> None:
    assert source_key("203.0.113.9") == "203.0.113.9"
    assert source_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert source_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("") == ""


def test_one_ipv6_slash_64_is_one_source_for_the_login_limit() -> None:
    clock, events = Clock(), list[tuple[Any, ...]]()
    guard = _guard(clock, events)
    verdicts = [
        guard.admit(f"2001:db8:0:7::{n + 1:x}", "acme.localhost", _login(f"u{n}"))
        for n in range(30)
    ]
    refused = [v for v in verdicts if isinstance(v, Refusal)]
    assert len(refused) == 10
    assert "from 2001:db8:0:7::/64" in refused[0].detail


def test_logins_to_one_tenant_beyond_its_budget_are_refused_from_every_source() -> None:
    clock, events = Clock(), list[tuple[Any, ...]]()
    guard = LoginGuard(
        "localhost",
        per_source=TokenBuckets(10, 20, clock=clock),
        per_user=TokenBuckets(5 / 60, 5, clock=clock),
        per_tenant=TokenBuckets(10, 20, clock=clock),
        record=lambda *args, **fields: events.append((*args, fields)),
        clock=clock,
    )
    verdicts = [guard.admit(f"10.0.{n}.1", "acme.localhost", _login(f"u{n}")) for n in range(50)]
    refused = [v for v in verdicts if isinstance(v, Refusal)]
    assert len(refused) == 30
    assert "for tenant 'acme'" in refused[0].detail
    assert refused[0].retry_after == 1
    # another tenant has its own budget; the refused attempts cost their sources nothing
    assert isinstance(guard.admit("10.0.0.1", "other.localhost", _login("u")), Admission)
    assert guard.per_source._level("10.0.40.1", clock()) == 20.0
    # one event for the tenant however many were refused, counting them a minute later
    tenant_events = [e for e in events if e[3]["limit"] == "tenant"]
    assert len(tenant_events) == 1
    assert tenant_events[0][1] == "acme"
    assert tenant_events[0][0] is EventType.USER_LOGIN_LIMITED
    clock.now += 61
    for n in range(25):
        guard.admit(f"10.1.{n}.1", "acme.localhost", _login(f"v{n}"))
    tenant_events = [e for e in events if e[3]["limit"] == "tenant"]
    assert len(tenant_events) == 2
    assert tenant_events[1][3]["refused"] == 30  # 29 since the first event, and this one
    # a successful login gives the tenant its token back
    clock.now += 10
    admitted = [guard.admit(f"10.2.{n}.1", "acme.localhost", _login("w")) for n in range(1)]
    assert isinstance(admitted[0], Admission)
    level = guard.per_tenant._level("acme", clock())
    guard.settle(admitted[0], 200)
    assert guard.per_tenant._level("acme", clock()) == min(20.0, level + 1)


def test_unauthenticated_calls_are_held_to_a_rate_per_source() -> None:
    clock = Clock()
    guard = LoginGuard(
        "localhost",
        per_source=TokenBuckets(10, 20, clock=clock),
        per_user=TokenBuckets(5 / 60, 5, clock=clock),
        anonymous=TokenBuckets(50, 100, clock=clock),
        clock=clock,
    )
    verdicts = [guard.admit_anonymous("192.0.2.1") for _ in range(150)]
    assert verdicts[:100] == [None] * 100
    refused = [v for v in verdicts if v is not None]
    assert len(refused) == 50
    assert "from 192.0.2.1" in refused[0].detail
    assert guard.admit_anonymous("192.0.2.2") is None
    clock.now += 1
    assert sum(guard.admit_anonymous("192.0.2.1") is None for _ in range(60)) == 50


def test_the_lambda_transport_runs_internal_calls_on_threads_of_their_own() -> None:
    from jumpgate.edge_proxy.lambda_invoke import LambdaInvoke
    from jumpgate.protocol.functions import Function

    invoke = LambdaInvoke({f: f"jumpgate-{f.value}" for f in Function}, region="us-east-1")
    threads: dict[str, str] = {}

    def fake(name: str, payload: bytes) -> Event:  # boto3 stands aside: which thread runs it
        threads[name] = threading.current_thread().name
        return {"statusCode": 200}

    invoke._invoke = fake  # type: ignore[method-assign]

    async def calls() -> None:
        await invoke({"rawPath": "/internal/v1/session-auth"})
        await invoke({"rawPath": "/v1/login"})

    try:
        asyncio.run(calls())
    finally:
        invoke.close()
    assert threads["jumpgate-internal"].startswith("lambda-invoke-internal")
    assert threads["jumpgate-auth"].startswith("lambda-invoke_")


def _from(source: str, host: str = "acme.localhost", path: str = "/v1/nodes") -> Event:
    return {
        "headers": {"host": host},
        "rawPath": path,
        "requestContext": {"http": {"method": "GET", "sourceIp": source}},
    }


def test_one_source_holds_at_most_its_share_of_a_tenant_lane() -> None:
    """The review's flood: one address keeps 80 calls in flight against one tenant. It gets 8
    of the lane's 34 places (2 workers, 32 waiting), the rest 429 at once naming it; another
    address's call still gets a place, and an IPv6 /64 is one source."""

    async def scenario() -> tuple[list[Any], list[Any], int]:
        release = asyncio.Event()

        async def invoke(event: Event) -> Event:
            await release.wait()
            return {"statusCode": 200}

        share = TenantShare(invoke, "localhost", per_tenant=2, queue=32, per_source=8)
        flood = [asyncio.create_task(share(_from("192.0.2.66"))) for _ in range(80)]
        six = [
            asyncio.create_task(share(_from(f"2001:db8:0:7::{n + 1:x}", path="/v1/users")))
            for n in range(10)
        ]
        await asyncio.sleep(0.01)
        held = share.waiting("acme")
        admin = asyncio.create_task(share(_from("198.51.100.1")))
        await asyncio.sleep(0.01)
        assert share.waiting("acme") == held + 1, "another address found no place"
        release.set()
        done = await asyncio.gather(*flood, *six, admin, return_exceptions=True)
        assert share._slots == {}
        assert share._sources == {}
        return done[:80], done[80:90], held

    flood, six, held = asyncio.run(scenario())
    served = [r for r in flood if r == {"statusCode": 200}]
    busy = [r for r in flood if isinstance(r, TenantBusy)]
    assert (len(served), len(busy)) == (8, 72)
    assert "from 192.0.2.66" in busy[0].refusal.detail
    assert busy[0].refusal.retry_after >= 1
    assert sum(isinstance(r, TenantBusy) for r in six) == 2  # one /64: 8 of its 10
    assert held == 16


def test_a_source_share_of_a_lane_must_be_at_least_one() -> None:
    async def invoke(event: Event) -> Event:
        return {"statusCode": 200}

    with pytest.raises(ValueError, match="per_source"):
        TenantShare(invoke, "localhost", per_tenant=2, per_source=0)


@pytest.mark.parametrize(
    ("method", "path", "headers", "refused"),
    [
        ("GET", "/v1/nodes", {}, True),
        ("GET", "/v1/status", {"x-jumpgate-cert": "c"}, True),
        ("DELETE", "/v1/users/bob", {"X-Jumpgate-Signature": "s", "X-Jumpgate-Cert": "c"}, True),
        ("GET", "/v1/nosuch", {}, True),
        (
            "GET",
            "/v1/nodes",
            {
                "X-Jumpgate-Cert": "c",
                "X-Jumpgate-Signature": "s",
                "X-Jumpgate-Time": "1",
                "X-Jumpgate-Nonce": "n",
            },
            False,
        ),
        ("POST", "/v1/login", {}, False),
        ("POST", "/v1/signup", {}, False),
        ("POST", "/v1/join", {}, False),
        ("GET", "/v1/trust", {}, False),
        ("GET", "/v1/ca", {}, False),
        ("GET", "/webapi/ping", {}, False),
        ("GET", "/v1/openapi.json", {}, False),
    ],
    ids=[
        "unsigned",
        "cert-only",
        "no-time-nonce",
        "unknown-route",
        "signed",
        "login",
        "signup",
        "join",
        "trust",
        "ca",
        "ping",
        "openapi",
    ],
)
def test_a_call_to_an_authenticated_route_without_a_signature_is_refused(
    method: str, path: str, headers: dict[str, str], refused: bool
) -> None:
    assert (unsigned(path, headers) is not None) == refused


def test_waiting_calls_are_served_a_source_at_a_time() -> None:
    """One address's 8 calls hold both workers and 6 places in the queue; another address's
    call is served as soon as a worker is free, not after those 6."""

    async def scenario() -> list[str]:
        order: list[str] = []
        gates: dict[str, asyncio.Event] = {}

        async def invoke(event: Event) -> Event:
            name = event["rawPath"]
            gates[name] = asyncio.Event()
            await gates[name].wait()
            order.append(name)
            return {"statusCode": 200}

        share = TenantShare(invoke, "localhost", per_tenant=2, queue=32, per_source=8)
        flood = [asyncio.create_task(share(_from("192.0.2.66", path=f"/f{n}"))) for n in range(8)]
        await asyncio.sleep(0.01)
        admin = asyncio.create_task(share(_from("198.51.100.1", path="/admin")))
        cancelled = asyncio.create_task(share(_from("198.51.100.2", path="/gone")))
        await asyncio.sleep(0.01)
        cancelled.cancel()  # a waiter that leaves gives its turn up
        await asyncio.sleep(0.01)
        for _ in range(9):
            running = [name for name, gate in gates.items() if not gate.is_set()]
            gates[sorted(running)[0]].set()
            await asyncio.sleep(0.01)
        await asyncio.gather(*flood, admin)
        assert share._slots == {}
        return order

    order = asyncio.run(scenario())
    assert order.index("/admin") <= 2, order  # after the two calls running when it came
    assert "/gone" not in order
    assert len(order) == 9

"""The handlers serve concurrent requests (the daemon runs them on a thread pool): each
request is answered for its own caller and tenant, never another's."""

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.functional.conftest import Answer, Platform, Session


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch as often as the interpreter allows, so races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("fast_switching")
def test_concurrent_callers_of_two_tenants_each_get_their_own_answer(platform: Platform) -> None:
    alice = platform.admin_session("acme", "alice")
    bob = platform.admin_session("globex", "bob")

    def status(session: Session | None, tenant: str) -> tuple[str, Answer]:
        if session is None:
            return tenant, platform.call("GET", "/webapi/ping", tenant=tenant)
        return tenant, platform.call("GET", "/v1/status", tenant=tenant, session=session)

    calls = [(alice, "acme"), (bob, "globex"), (None, "acme")] * 200
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda call: status(*call), calls))
    wrong = [
        (tenant, answer.status, answer.body)
        for tenant, answer in answers
        if answer.status != 200 or answer.body.get("cluster_name", tenant) != tenant
    ]
    assert wrong == []

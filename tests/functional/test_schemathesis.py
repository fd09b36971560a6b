"""schemathesis over the OpenAPI document the API serves: every operation, at least 1,000
generated requests in all, seeded (derandomized), each signed by a tenant admin as ``jumpctl``
signs (so they reach the handlers, not only authentication). No answer may be a 5xx, and
every answer must match the schema the document gives for it.

The handler is served to schemathesis as a WSGI app in this process: the adapter turns each
request into the API Gateway v2 event the proxy would send, as the proxy does.
"""

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.functional.conftest import Platform, Session

EXAMPLES = 100
"""Per operation; with every operation of the API, well over 1,000 requests."""
MIN_CASES = 1000


class SignedAPI:
    """WSGI in front of the handler; signs each request with ``session`` when it has none."""

    def __init__(self, platform: Platform, session: Session) -> None:
        self.platform = platform
        self.session = session
        self.served = 0

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[[str, list[Any]], Any]
    ) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        path = quote(environ.get("PATH_INFO", "/"), safe="/:@!$&'()*+,;=-._~")
        answer = self.platform.respond(
            environ["REQUEST_METHOD"],
            path,
            raw=body,
            content_type=environ.get("CONTENT_TYPE") or "application/json",
            query=environ.get("QUERY_STRING", ""),
            session=self.session,
        )
        self.served += 1
        reason = "OK" if answer.status < 400 else "Error"
        start_response(f"{answer.status} {reason}", list(answer.headers.items()))
        return [answer.body]


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_no_server_error_and_no_answer_outside_the_schema(platform: Platform) -> None:
    app = SignedAPI(platform, platform.admin_session("acme", "alice"))
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15

    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,  # the same cases every run: a failure reproduces
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        check()
    assert app.served >= MIN_CASES

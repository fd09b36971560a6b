"""The API handler in-process over a real store (SQLite, or DynamoDB under moto)."""

import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.audit.base import AuditStore
from jumpgate.control_plane.clock import ManualClock
from jumpgate.control_plane.handlers.api import make_handler
from jumpgate.control_plane.handlers.internal import make_internal_handler
from jumpgate.control_plane.plane import ControlPlane, Settings
from jumpgate.control_plane.recordings.base import RecordingStore
from jumpgate.control_plane.secrets import MasterKey, SecretBox
from jumpgate.control_plane.store import Store
from jumpgate.control_plane.tokens import StaticToken
from jumpgate.edge_proxy.events import HttpResponse, decode_response, http_event
from jumpgate.protocol import signing

PASSWORD = "correct horse battery staple"
STATIC_PROXY_TOKEN = "static-proxy-token-0123456789"


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def problem_type(self) -> str:
        return str(self.body.get("type", "")).rsplit(":", 1)[-1]

    @property
    def detail(self) -> str:
        return str(self.body.get("detail", ""))


@dataclass
class Session:
    """A user's login: key, certificate and TOTP secret."""

    tenant: str
    user: str
    totp: pyotp.TOTP
    key: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)
    certificate: str = ""


class Platform:
    """Calls the handler as the proxy would, signing requests like jump/jumpctl do."""

    def __init__(self, plane: ControlPlane, clock: ManualClock) -> None:
        self.plane = plane
        self.clock = clock
        self.handler = make_handler(plane)

    def respond(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        tenant: str = "acme",
        session: Session | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        host: str | None = None,
        nonce: str | None = None,
        query: str = "",
    ) -> HttpResponse:
        """The handler's raw answer to a request, signed with ``session`` if given."""
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        headers = {"host": host or f"{tenant}.localhost:3080"}
        if data:
            headers["content-type"] = content_type
        if session is not None:
            request = signing.SignedRequest(
                method,
                headers["host"],
                path,
                query,
                int(self.clock.now().timestamp()),
                nonce or secrets.token_urlsafe(18),
                data,
            )
            headers.update(signing.headers(session.key, session.certificate, request))
        event = http_event(
            method=method, path=path, query=query, headers=headers, body=data, source_ip="127.0.0.1"
        )
        return decode_response(self.handler(event, None))

    def call(self, method: str, path: str, body: Any = None, **options: Any) -> Answer:
        """As ``respond``, with the JSON answer decoded."""
        response = self.respond(method, path, body, **options)
        payload = json.loads(response.body) if response.body else None
        return Answer(response.status, payload, response.headers)

    def internal(self, path: str, body: Any) -> dict[str, Any]:
        """The internal handler's raw answer to ``body`` POSTed to ``path``, as a proxy sends
        it (the internal routes take no signature: only proxies reach them)."""
        event = http_event(
            method="POST",
            path=path,
            query="",
            headers={"host": "internal", "content-type": "application/json"},
            body=json.dumps(body).encode(),
            source_ip="127.0.0.1",
        )
        return dict(make_internal_handler(self.plane)(event, None))

    def invite(self, tenant: str, admin: str, *, logins: list[str] | None = None) -> str:
        created = self.plane.create_tenant(tenant, admin=admin, logins=logins or ["root"])
        return created.admin_invite.token

    def signup(self, tenant: str, token: str, user: str) -> Session:
        answer = self.call(
            "POST", "/v1/signup", {"token": token, "password": PASSWORD}, tenant=tenant
        )
        assert answer.status == 200, answer.body
        return Session(tenant, user, pyotp.TOTP(answer.body["totp_secret"]))

    def otp(self, session: Session) -> str:
        return session.totp.at(self.clock.now())

    def login(self, session: Session, *, ttl_seconds: int | None = None) -> Answer:
        public = session.key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        body: dict[str, Any] = {
            "user": session.user,
            "password": PASSWORD,
            "otp": self.otp(session),
            "public_key": public.decode(),
        }
        if ttl_seconds:
            body["ttl_seconds"] = ttl_seconds
        answer = self.call("POST", "/v1/login", body, tenant=session.tenant)
        if answer.status == 200:
            session.certificate = answer.body["certificate"]
        return answer

    def next_code(self) -> None:
        """Move past the TOTP step just used so the next login has a fresh code."""
        self.clock.advance(timedelta(seconds=30))

    def admin_session(self, tenant: str = "acme", user: str = "alice") -> Session:
        session = self.signup(tenant, self.invite(tenant, user), user)
        assert self.login(session).status == 200
        return session


def _static() -> tuple[StaticToken, ...]:
    return (StaticToken("acme", STATIC_PROXY_TOKEN, ("proxy",)),)


@pytest.fixture
def plane(
    store: Store,
    paired_audit: AuditStore,
    paired_recordings: RecordingStore,
    clock: ManualClock,
) -> ControlPlane:
    """The control plane over each store pair, with cheap bcrypt and a static proxy token."""
    return ControlPlane(
        store,
        SecretBox(MasterKey.from_bytes(secrets.token_bytes(32))),
        audit=paired_audit,
        recordings=paired_recordings,
        settings=Settings(bcrypt_rounds=4, static_tokens=_static()),
        clock=clock,
    )


@pytest.fixture
def platform(plane: ControlPlane, clock: ManualClock) -> Platform:
    return Platform(plane, clock)

"""The ``/v1`` API as a Lambda handler (Powertools ``APIGatewayHttpResolver``).

Each route parses and validates (pydantic models from ``protocol``), resolves the tenant
from the ``Host`` the caller addressed, authenticates where needed, calls one domain service
and maps the result. Requests are checked for size and content type before routing, and
every error leaves as problem+json through ``problems``.

Every route past login names the kind and verb the caller's roles must allow
(``Identity.authorize``; docs/decisions/0034): ``GET /v1/status`` only needs a caller.
Recordings are the ``session`` kind: listing shows every recording when a rule allows it for
all, else only the caller's own (a ``where`` rule); reading, fetching a part and verifying
(a read that checks) another's, when only one's own is allowed, is "not found". How sessions
are recorded is the ``settings`` kind. The routes of roles, locks and one user are declared
in ``resources``.
"""

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import AfterValidator

from jumpgate.control_plane import errors, keys
from jumpgate.control_plane.audit.base import Query as AuditQuery
from jumpgate.control_plane.authn import Identity, Request
from jumpgate.control_plane.handlers import problems, resources
from jumpgate.control_plane.handlers.resolver import ConcurrentResolver
from jumpgate.control_plane.handlers.resources import check_roles_exist, lock_fields, user_info
from jumpgate.control_plane.nodes import NodeView
from jumpgate.control_plane.plane import ControlPlane
from jumpgate.protocol import certs, invalid, models, routes
from jumpgate.protocol.audit import (
    DEFAULT_SEARCH_LIMIT,
    MAX_SEARCH_LIMIT,
    AuditPage,
    EventType,
)
from jumpgate.protocol.names import tenant_from_host
from jumpgate.protocol.problems import MAX_BODY_BYTES, ProblemType
from jumpgate.protocol.resources import Kind, Verb
from jumpgate.protocol.trust import NONCE_PATTERN, SignedTrust
from jumpgate.protocol.version import PROTOCOL_VERSION, server_version

Event = dict[str, Any]
Handler = Callable[[Event, Any], Event]
logger = logging.getLogger(__name__)

_JSON_TYPES = ("application/json", "application/problem+json")
UserParam = Annotated[str, Path(max_length=128), AfterValidator(unquote)]
"""A user named in a path, percent-decoded (the path stays as sent: signatures cover it)."""
SessionParam = Annotated[str, Path(min_length=32, max_length=36, pattern="^[0-9a-f-]+$")]
"""A recording's session id (a UUID) in a path."""
LOGIN_METHOD = "password+totp"


def build_app(plane: ControlPlane) -> ConcurrentResolver:
    """The resolver with every route bound to ``plane``."""
    app = ConcurrentResolver(enable_validation=True, response_validation_error_http_code=500)

    def addressed_tenant() -> str:
        host = app.current_event.headers.get("host", "")
        tenant = tenant_from_host(host, plane.settings.public_addr)
        if tenant is None:
            raise errors.UnknownTenant(
                f"address a cluster as NAME.{plane.settings.public_addr}, "
                f"e.g. acme.{plane.settings.public_addr}"
            )
        plane.tenants.get(tenant)
        return tenant

    def caller(tenant: str) -> Identity:
        event = app.current_event
        body = event.decoded_body or ""
        request = Request(
            method=event.request_context.http.method,
            host=event.headers.get("host", ""),
            path=event.raw_path,
            query=event.raw_query_string,
            headers={k.lower(): v for k, v in event.headers.items()},
            body=body.encode(),
        )
        return plane.authn.authenticate(tenant, request)

    def allowed(kind: Kind, verb: Verb) -> Identity:
        """The caller, if their roles allow ``verb`` over ``kind``."""
        identity = caller(addressed_tenant())
        identity.authorize(kind, verb)
        return identity

    def record(
        event_type: EventType,
        tenant: str,
        identity: Identity | None = None,
        *,
        outcome: str = "I",
        **fields: Any,
    ) -> None:
        """An audit event of this request: who, from where."""
        fields.setdefault("user", identity.user if identity is not None else "")
        plane.audit.emit(
            event_type,
            tenant,
            outcome=outcome,
            remote_addr=app.current_event.request_context.http.source_ip or "",
            **fields,
        )

    def ca_keys(tenant: str) -> models.CAKeys:
        user_cas, host_cas = plane.authorities.trusted_keys(tenant)
        return models.CAKeys(
            tenant=tenant,
            user_ca_keys=user_cas,
            host_ca_keys=host_cas,
            ca_pin=certs.ca_pin(host_cas[0]),
        )

    def public_addrs(tenant: str | None) -> tuple[str, str]:
        return public_addrs_of(plane, tenant)

    def trust_document(tenant: str, nonce: str) -> SignedTrust:
        return signed_trust(plane, tenant, nonce)

    @app.get(routes.PING.path, summary="Health and the addresses of a cluster's listeners")
    def ping() -> models.Ping:
        """For people and CLIs; nodes believe only ``/v1/trust``, which the host CA signs."""
        host = app.current_event.headers.get("host", "")
        tenant = tenant_from_host(host, plane.settings.public_addr)
        if tenant is not None:
            plane.tenants.get(tenant)
        ssh_addr, tunnel_addr = public_addrs(tenant)
        return models.Ping(
            server_version=server_version(),
            protocol_version=PROTOCOL_VERSION,
            cluster_name=tenant,
            ssh_public_addr=ssh_addr,
            tunnel_public_addr=tunnel_addr,
            proxy_host_keys=list(plane.settings.proxy_host_keys),
        )

    @app.get(routes.TRUST.path, summary="What the cluster's nodes trust, signed by its host CA")
    def get_trust(
        nonce: Annotated[str | None, Query(pattern=NONCE_PATTERN)] = None,
    ) -> SignedTrust:
        return trust_document(addressed_tenant(), nonce or "")

    @app.get(routes.OPENAPI.path, include_in_schema=False)
    def openapi() -> Response[str]:
        return Response(200, "application/json", app.get_openapi_json_schema(title="Jumpgate API"))

    @app.get(routes.CA.path, summary="The cluster's CA public keys and host CA pin")
    def get_ca() -> models.CAKeys:
        return ca_keys(addressed_tenant())

    @app.post(routes.SIGNUP.path, summary="Accept an invite: set a password, enrol TOTP")
    def signup(body: models.SignupRequest) -> models.SignupResponse:
        tenant = addressed_tenant()
        try:
            enrolment = plane.users.signup(tenant, body.token, body.password)
        except errors.InviteInvalid as exc:
            record(EventType.USER_SIGNUP, tenant, outcome="W", error=str(exc))
            raise
        record(EventType.USER_SIGNUP, tenant, outcome="I", user=enrolment.user)
        return models.SignupResponse(
            tenant=tenant,
            user=enrolment.user,
            totp_secret=enrolment.totp_secret,
            otpauth_uri=enrolment.otpauth_uri,
        )

    @app.post(routes.LOGIN.path, summary="Password and one-time code for an SSH user certificate")
    def login(body: models.LoginRequest) -> models.LoginResponse:
        tenant = addressed_tenant()
        ttl = timedelta(seconds=body.ttl_seconds) if body.ttl_seconds else None
        try:
            issued = plane.login.login(
                tenant,
                user=body.user,
                password=body.password,
                otp=body.otp,
                public_key=body.public_key,
                ttl=ttl,
            )
        except ValueError as exc:
            raise errors.InvalidRequest(str(exc)) from exc
        except errors.Unauthenticated as exc:
            record(
                EventType.USER_LOGIN,
                tenant,
                outcome="W",
                user=body.user,
                method=LOGIN_METHOD,
                error=str(exc),
            )
            if isinstance(exc, errors.LockedOut):
                record(
                    EventType.USER_LOCK,
                    tenant,
                    outcome="W",
                    name=exc.user,
                    reason=exc.reason,
                    expires=exc.locked_until.isoformat(),
                )
            raise
        record(
            EventType.USER_LOGIN,
            tenant,
            user=issued.user,
            method=LOGIN_METHOD,
            valid_before=issued.valid_before.isoformat(),
        )
        return models.LoginResponse(
            tenant=tenant,
            user=issued.user,
            roles=issued.roles,
            logins=issued.logins,
            certificate=issued.certificate,
            valid_before=issued.valid_before,
            ca=ca_keys(tenant),
        )

    @app.post(routes.JOIN.path, summary="Join token and host key for a host certificate")
    def join(body: models.JoinRequest) -> models.JoinResponse:
        tenant = addressed_tenant()
        try:
            joined = plane.tokens.join(
                tenant, token=body.token, public_key=body.public_key, nodename=body.nodename
            )
        except ValueError as exc:
            raise errors.InvalidRequest(str(exc)) from exc
        except errors.TokenInvalid as exc:
            record(
                EventType.JOIN,
                tenant,
                outcome="W",
                token_id=token_id(body.token),
                nodename=body.nodename,
                error=str(exc),
            )
            raise
        record(
            EventType.JOIN,
            tenant,
            server_id=joined.host_id,
            nodename=body.nodename,
            token_id=token_id(body.token),
        )
        return models.JoinResponse(
            host_id=joined.host_id,
            certificate=joined.certificate,
            ca=ca_keys(tenant),
            trust=trust_document(tenant, body.nonce or ""),
        )

    @app.get(routes.STATUS.path, summary="Cluster name, CAs and the host CA pin")
    def status() -> models.ClusterStatus:
        tenant = addressed_tenant()
        caller(tenant)
        cas = [plane.authorities.get(tenant, kind) for kind in ("user", "host")]
        return models.ClusterStatus(
            cluster_name=tenant,
            server_version=server_version(),
            ca_pin=certs.ca_pin(cas[1].public_key),
            cas=[
                models.CAInfo(
                    kind=ca.kind,
                    key_type=ca.key_type.value,
                    fingerprint=certs.fingerprint(ca.public_key),
                    trusted=[certs.fingerprint(key) for key in ca.trusted_keys],
                )
                for ca in cas
            ],
        )

    @app.get(routes.NODES.path, summary="Nodes of the cluster, with labels and whether online")
    def list_nodes() -> models.NodeList:
        identity = allowed(Kind.NODE, Verb.LIST)
        checker = identity.checker
        return models.NodeList(
            nodes=[
                node_view(v)
                for v in plane.nodes.list(identity.tenant)
                if checker.visible(v.record.labels)
            ]
        )

    @app.delete(routes.NODE_REMOVE.path, status_code=204, summary="Remove a node (uuid or name)")
    def remove_node(name: Annotated[str, Path(max_length=253), AfterValidator(unquote)]) -> None:
        identity = allowed(Kind.NODE, Verb.DELETE)
        plane.nodes.remove(identity.tenant, name)
        record(EventType.NODE_DELETE, identity.tenant, identity, node=name)

    @app.get(routes.USERS.path, summary="Users of the cluster")
    def list_users() -> models.UserList:
        identity = allowed(Kind.USER, Verb.LIST)
        locks = plane.locks.list(identity.tenant)
        return models.UserList(
            users=[
                user_info(plane, identity.tenant, u, locks=locks)
                for u in plane.users.list(identity.tenant)
            ]
        )

    @app.post(routes.USER_ADD.path, status_code=201, summary="Invite a user")
    def add_user(body: models.UserCreateRequest) -> models.UserCreated:
        identity = allowed(Kind.USER, Verb.CREATE)
        check_roles_exist(plane, identity.tenant, body.roles)
        invite = plane.users.add(
            identity.tenant,
            body.name,
            logins=body.logins,
            roles=body.roles,
            invite_ttl=timedelta(seconds=body.invite_ttl_seconds),
        )
        record(
            EventType.USER_CREATE,
            identity.tenant,
            identity,
            name=invite.user,
            roles=body.roles,
            logins=body.logins,
        )
        return models.UserCreated(
            user=invite.user, invite_token=invite.token, expires=invite.expires
        )

    @app.delete(routes.USER_REMOVE.path, status_code=204, summary="Remove a user")
    def remove_user(name: UserParam) -> None:
        identity = allowed(Kind.USER, Verb.DELETE)
        if name == identity.user:
            raise errors.InvalidRequest("you cannot remove yourself: ask another admin")
        removed, _ = plane.users.get(identity.tenant, name)
        plane.users.remove(identity.tenant, name)
        record(EventType.USER_DELETE, identity.tenant, identity, name=name)
        # ends the connections the removed user has open, wherever they are
        lock = plane.locks.user_removed(identity.tenant, name, removed.id, by=identity.user)
        record(EventType.LOCK_CREATED, identity.tenant, identity, **lock_fields(lock))

    @app.get(routes.TOKENS.path, summary="Join tokens")
    def list_tokens() -> models.TokenList:
        identity = allowed(Kind.TOKEN, Verb.LIST)
        return models.TokenList(
            tokens=[
                models.TokenInfo(
                    token=t.token,
                    roles=[models.SystemRole(r) for r in t.system_roles],
                    expires=t.expires,
                    static=t.static,
                )
                for t in plane.tokens.list(identity.tenant)
            ]
        )

    @app.post(routes.TOKEN_ADD.path, status_code=201, summary="Issue a join token")
    def add_token(body: models.TokenCreateRequest) -> models.TokenCreated:
        identity = allowed(Kind.TOKEN, Verb.CREATE)
        token = plane.tokens.create(
            identity.tenant,
            system_roles=[r.value for r in body.roles],
            ttl=timedelta(seconds=body.ttl_seconds),
            token=body.token,
        )
        assert token.expires is not None
        record(
            EventType.TOKEN_CREATE,
            identity.tenant,
            identity,
            token_id=token_id(token.token),
            roles=list(token.system_roles),
            expires=token.expires.isoformat(),
        )
        return models.TokenCreated(
            token=token.token,
            roles=[models.SystemRole(r) for r in token.system_roles],
            expires=token.expires,
            ca_pin=certs.ca_pin(plane.authorities.get(identity.tenant, "host").public_key),
            self_signed_web_certificate=plane.settings.self_signed_web_certificate,
        )

    @app.delete(routes.TOKEN_REMOVE.path, status_code=204, summary="Revoke a join token")
    def remove_token(
        token: Annotated[str, Path(max_length=256), AfterValidator(unquote)],
    ) -> None:
        identity = allowed(Kind.TOKEN, Verb.DELETE)
        plane.tokens.remove(identity.tenant, token)
        record(EventType.TOKEN_DELETE, identity.tenant, identity, token_id=token_id(token))

    @app.get(routes.AUDIT_EVENTS.path, summary="Search the audit log, a page at a time")
    def search_events(
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        types: Annotated[list[str] | None, Query(alias="type", max_length=32)] = None,
        user: Annotated[str, Query(max_length=128)] = "",
        order: Annotated[Literal["asc", "desc"], Query()] = "desc",
        limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT)] = DEFAULT_SEARCH_LIMIT,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> AuditPage:
        identity = allowed(Kind.EVENT, Verb.LIST)
        now = plane.clock.now()
        query = AuditQuery(
            tenant=identity.tenant,
            since=_aware(since) if since else now - timedelta(days=1),
            until=_aware(until) if until else now + timedelta(seconds=1),
            types=frozenset(types or ()),
            user=user,
            newest_first=order == "desc",
            limit=limit,
        )
        return plane.audit.search(query, cursor)

    def reader(session_id: str) -> Identity:
        """The caller, if their roles let them read this recording (``session`` ``read``, for
        every session or, by a ``where`` rule, their own). Anyone who may read only their own
        is told another's does not exist (another user's sessions are not confirmed)."""
        identity = caller(addressed_tenant())
        identity.authorize_some(Kind.SESSION, Verb.READ)
        meta = plane.recordings.recordings.get_meta(identity.tenant, session_id)
        if not identity.checker.allows(Kind.SESSION, Verb.READ, own=meta.user == identity.user):
            raise errors.NotFound(
                f"no recording {session_id} in cluster {identity.tenant!r}: see jump recordings ls"
            )
        return identity

    @app.get(routes.RECORDINGS.path, summary="Finished recordings (yours, or all for an admin)")
    def list_recordings(
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
        order: Annotated[Literal["asc", "desc"], Query()] = "desc",
        limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT)] = DEFAULT_SEARCH_LIMIT,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> models.RecordingList:
        identity = caller(addressed_tenant())
        identity.authorize_some(Kind.SESSION, Verb.LIST)
        every = identity.checker.allows(Kind.SESSION, Verb.LIST)
        now = plane.clock.now()
        query = AuditQuery(
            tenant=identity.tenant,
            since=_aware(since) if since else now - timedelta(days=7),
            until=_aware(until) if until else now + timedelta(seconds=1),
            types=frozenset({EventType.SESSION_UPLOAD.value}),
            user="" if every else identity.user,
            newest_first=order == "desc",
            limit=limit,
        )
        page = plane.audit.search(query, cursor)
        fields = models.RecordingRow.model_fields
        rows = [
            models.RecordingRow.model_validate(
                {k: v for k, v in event.model_dump().items() if k in fields}
            )
            for event in page.events
        ]
        return models.RecordingList(recordings=rows, cursor=page.cursor)

    @app.get(routes.RECORDING.path, summary="A recording: what it is of, its parts")
    def get_recording(session_id: SessionParam) -> models.RecordingInfo:
        identity = reader(session_id)
        return plane.recordings.describe(identity.tenant, session_id)

    @app.get(routes.RECORDING_PART.path, summary="One part, checked")
    def get_recording_part(
        session_id: SessionParam, index: Annotated[int, Path(ge=1, le=1_000_000)]
    ) -> models.RecordingPart:
        return plane.recordings.read(reader(session_id).tenant, session_id, index)

    @app.post(routes.RECORDING_VERIFY.path, summary="Check every part and the manifest")
    def verify_recording(session_id: SessionParam) -> models.RecordingVerdict:
        return plane.recordings.verify(reader(session_id).tenant, session_id)

    @app.get(routes.RECORDING_SETTINGS.path, summary="How the cluster records sessions")
    def get_recording_settings() -> models.RecordingSettings:
        return plane.recordings.settings(allowed(Kind.SETTINGS, Verb.READ).tenant)

    @app.put(routes.RECORDING_SETTINGS_SET.path, summary="Set how the cluster records sessions")
    def set_recording_settings(body: models.RecordingSettings) -> models.RecordingSettings:
        identity = allowed(Kind.SETTINGS, Verb.UPDATE)
        plane.recordings.set_settings(identity.tenant, body)
        record(
            EventType.RECORDING_SETTINGS,
            identity.tenant,
            identity,
            mode=body.mode.value,
            record_exec=body.record_exec,
        )
        return body

    resources.register(app, plane, allowed=allowed, record=record)
    answer_problems(app)

    @app.not_found
    def on_not_found(_: Exception) -> Response[str]:
        return response(
            problems.problem(
                404, ProblemType.NOT_FOUND, "Not found", "no such route: see /v1/openapi.json"
            )
        )

    return app


def public_addrs_of(plane: ControlPlane, tenant: str | None) -> tuple[str, str]:
    """The (users' SSH, tunnel) addresses of a tenant's proxies."""
    settings = plane.settings
    base = f"{tenant}.{settings.public_addr}" if tenant else settings.public_addr
    return f"{base}:{settings.ssh_public_port}", f"{base}:{settings.tunnel_public_port}"


def signed_trust(plane: ControlPlane, tenant: str, nonce: str) -> SignedTrust:
    """The tenant's trust document answering ``nonce``, signed by its host CA: what
    ``/v1/trust`` answers a node, and what the proxy pushes on a tunnel's control channel."""
    ssh_addr, tunnel_addr = public_addrs_of(plane, tenant)
    return plane.authorities.trust_document(
        tenant,
        proxy_host_keys=plane.settings.proxy_host_keys,
        tunnel_public_addr=tunnel_addr,
        ssh_public_addr=ssh_addr,
        now=plane.clock.now(),
        nonce=nonce,
        web_certificate_sha256=plane.settings.web_certificate_sha256,
    )


def _aware(moment: datetime) -> datetime:
    """A time from a query string; one without a zone is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def token_id(token: str) -> str:
    """What the audit log says of a join token: a digest prefix, never the secret."""
    return keys.digest(token)[:16]


def answer_problems(app: APIGatewayHttpResolver) -> None:
    """Every control-plane error and invalid request leaves ``app`` as problem+json."""

    @app.exception_handler(errors.JumpgateError)
    def on_error(error: errors.JumpgateError) -> Response[str]:
        return response(problems.from_error(error))

    @app.exception_handler(RequestValidationError)
    def on_invalid(error: RequestValidationError) -> Response[str]:
        return response(validation_problem(error))


def node_view(view: NodeView) -> models.NodeView:
    """A node as the API shows it."""
    record = view.record
    return models.NodeView(
        host_id=record.host_id,
        nodename=record.nodename,
        hostname=record.hostname,
        addr=record.addr,
        version=record.version,
        labels=record.labels,
        online=view.online,
        joined=record.joined,
    )


def response(raw: Event) -> Response[str]:
    return Response(raw["statusCode"], raw["headers"]["Content-Type"], raw["body"])


def validation_problem(error: RequestValidationError) -> Event:
    details = error.errors()
    first = details[0] if details else {}
    if first.get("type") == "json_invalid":
        return problems.problem(
            400, ProblemType.MALFORMED_JSON, "Malformed JSON", "request body is not valid JSON"
        )
    detail = invalid.line(first, skip=("body",)) if first else "invalid request"
    return problems.problem(400, ProblemType.INVALID_REQUEST, "Invalid request", detail)


def make_handler(plane: ControlPlane) -> Handler:
    """The Lambda-shaped entry point of the public API."""
    return guarded(build_app(plane))


def guarded(app: ConcurrentResolver, *, max_body: int = MAX_BODY_BYTES) -> Handler:
    """A handler that checks size and media type, then routes; never raises. Calls may
    overlap: the resolver keeps each request's state apart (docs/decisions/0018)."""
    app.prepare()

    def handler(event: Event, context: Any) -> Event:
        early = _precheck(event, max_body)
        if early is not None:
            return early
        try:
            return app.resolve(event, context)
        except Exception:
            logger.exception("unhandled error in API handler")
            return problems.problem(
                500, ProblemType.INTERNAL, "Internal error", "internal error: see the platform logs"
            )

    return handler


def _precheck(event: Event, max_body: int) -> Event | None:
    body = event.get("body") or ""
    size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode())
    if size > max_body:
        return problems.problem(
            413,
            ProblemType.BODY_TOO_LARGE,
            "Body too large",
            f"request body is {size} bytes; the limit is {max_body}",
        )
    if body:
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in _JSON_TYPES:
            return problems.problem(
                415,
                ProblemType.UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
                "send the request body as Content-Type: application/json",
            )
    try:
        if body and not event.get("isBase64Encoded"):
            json.loads(body)
    except (ValueError, RecursionError):  # deep nesting: not a ValueError, still bad JSON
        return problems.problem(
            400, ProblemType.MALFORMED_JSON, "Malformed JSON", "request body is not valid JSON"
        )
    return None

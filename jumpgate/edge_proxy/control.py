"""The proxy's client of the control plane's internal routes.

Its transport is an ``Invoke``: an in-process call of the internal handler (embedded) or a
Lambda invoke (AWS). The proxy never touches the state store itself.
"""

import base64
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from jumpgate.edge_proxy.events import Invoke, decode_response, http_event
from jumpgate.edge_proxy.lambda_invoke import ControlPlaneUnavailable
from jumpgate.protocol import models, routes
from jumpgate.protocol.recording import PartInfo, RecordingMeta, SessionEnd
from jumpgate.protocol.resources import Role
from jumpgate.protocol.trust import SignedTrust


class ControlPlaneError(Exception):
    """The control plane refused or failed a call; ``str()`` is its one-line detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status

    @property
    def for_good(self) -> bool:
        """The call was refused as it is (4xx): sending it again cannot help. Otherwise the
        control plane failed or was out of reach (5xx, 503 for a failed invoke): try later."""
        return 400 <= self.status < 500 and self.status not in (408, 429)


M = TypeVar("M", bound=BaseModel)

MAX_FEED_PAGES = 1000
"""Pages of one reading of the locks at most (500,000 locks): a feed that never ends is an
error, not a loop."""


def _body(kind: type[M], **fields: Any) -> M:
    """A request body, or ``ControlPlaneError`` 400 naming the field, as the control plane
    would answer it: the proxy builds some bodies from what users and nodes send (a node
    name typed by a user, a tenant from a tunnel's SSH user name)."""
    try:
        return kind(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ControlPlaneError(400, f"{where}: {message}") from None


class ControlPlaneClient:
    """Typed calls of the internal routes."""

    def __init__(self, invoke: Invoke) -> None:
        self._invoke = invoke

    async def _call(self, route: routes.Route, body: BaseModel | None = None) -> Any:
        try:
            data = body.model_dump_json().encode() if body is not None else b""
        except ValueError as exc:  # text UTF-8 cannot encode: the platform answers it 400
            raise ControlPlaneError(400, f"the request cannot be sent: {exc}"[:300]) from None
        headers = {"host": "internal", "content-type": "application/json"}
        event = http_event(
            method=route.method,
            path=route.path,
            query="",
            headers=headers,
            body=data,
            source_ip="127.0.0.1",
        )
        try:
            answer = decode_response(await self._invoke(event))
        except ControlPlaneUnavailable as exc:
            raise ControlPlaneError(503, str(exc)) from exc
        payload = json.loads(answer.body) if answer.body else None
        if answer.status >= 400:
            detail = payload.get("detail", "") if isinstance(payload, dict) else ""
            raise ControlPlaneError(
                answer.status, detail or f"control plane answered {answer.status}"
            )
        return payload

    async def tenant_by_user_ca(self, public_key: str) -> str | None:
        """The tenant whose user CA ``public_key`` is, or ``None``."""
        try:
            answer = await self._call(
                routes.TENANT_BY_USER_CA,
                _body(models.TenantByUserCA, public_key=public_key),
            )
        except ControlPlaneError as exc:
            if exc.status == 404:
                return None
            raise
        return str(answer["tenant"])

    async def tunnel_auth(self, tenant: str, host_id: str, public_key: str) -> models.TunnelNode:
        """The node a tunnel key belongs to; ``ControlPlaneError`` when it is not one."""
        body = _body(models.TunnelAuth, tenant=tenant, host_id=host_id, public_key=public_key)
        return models.TunnelNode.model_validate(await self._call(routes.TUNNEL_AUTH, body))

    async def session_auth(self, body: models.SessionAuth) -> models.SessionVerdict:
        """Whether a new connection's node and user are still allowed, in one call."""
        return models.SessionVerdict.model_validate(await self._call(routes.SESSION_AUTH, body))

    async def audit(self, events: list[models.AuditRecord]) -> None:
        """Hand events this proxy saw to the audit log."""
        await self._call(routes.AUDIT_INTAKE, _body(models.AuditRecords, events=events))

    async def renew_host_cert(self, tenant: str, host_id: str) -> str:
        """A fresh host certificate for a node authenticated on its tunnel."""
        body = _body(models.HostCertRenewal, tenant=tenant, host_id=host_id)
        answer = await self._call(routes.RENEW_HOST_CERT, body)
        return str(answer["certificate"])

    async def trust(self, tenant: str, nonce: str) -> SignedTrust:
        """The tenant's trust document, signed by its host CA, answering a node's ``nonce``."""
        body = _body(models.TrustRequest, tenant=tenant, nonce=nonce)
        answer = await self._call(routes.NODE_TRUST, body)
        try:
            return SignedTrust.model_validate(answer)
        except ValidationError as exc:
            raise ControlPlaneError(502, "the control plane sent no trust document") from exc

    async def presence(self, presence: models.Presence) -> None:
        await self._call(routes.PRESENCE, presence)

    async def node_removals(self) -> list[models.RemovedNode]:
        """Nodes removed in the last few minutes, in every tenant."""
        answer = await self._call(routes.NODE_REMOVALS)
        return models.NodeRemovals.model_validate(answer).nodes

    async def lock_feed(self, revision: str = "") -> models.LockFeed | None:
        """Every lock in force on the platform and each tenant's roles revision, read a page
        at a time; ``None`` when ``revision`` (the one the caller holds) is still current."""
        pages: list[models.LockFeed] = []
        cursor = ""
        while len(pages) < MAX_FEED_PAGES:
            body = _body(models.LockFeedRequest, revision=revision, cursor=cursor)
            page = models.LockFeed.model_validate(await self._call(routes.LOCK_FEED, body))
            if page.unchanged:
                return None
            pages.append(page)
            cursor = page.next_cursor
            if not cursor:
                first = pages[0]
                locks = [held for page in pages for held in page.locks]
                return first.model_copy(update={"locks": locks, "next_cursor": ""})
        raise ControlPlaneError(502, f"the lock feed did not end within {MAX_FEED_PAGES} pages")

    async def role_definitions(self, tenant: str, names: list[str]) -> list[Role]:
        """The current definitions of those of ``names`` that are roles of ``tenant``."""
        body = _body(models.RoleDefinitionsRequest, tenant=tenant, names=names)
        answer = await self._call(routes.ROLE_DEFINITIONS, body)
        return models.RoleList.model_validate(answer).roles

    async def proxy_alive(self, proxy_id: str, peer_addr: str = "") -> None:
        body = _body(models.ProxyAlive, proxy=proxy_id, peer_addr=peer_addr)
        await self._call(routes.PROXY_ALIVE, body)

    async def locate(self, tenant: str, name: str) -> models.NodeLocation:
        """The online node ``name`` and the proxy holding its tunnel; ``ControlPlaneError``
        404 when it is not online, 400 when the name is ambiguous."""
        body = _body(models.Locate, tenant=tenant, name=name)
        return models.NodeLocation.model_validate(await self._call(routes.LOCATE, body))

    async def proxy_certificates(self, proxy_id: str, public_key: str) -> models.ProxyCertificates:
        """Peering certificates for this proxy's key."""
        body = _body(models.ProxyCertRequest, proxy=proxy_id, public_key=public_key)
        return models.ProxyCertificates.model_validate(await self._call(routes.PROXY_CERT, body))

    async def recording_settings(self, tenant: str) -> models.RecordingSettings:
        answer = await self._call(routes.UPLOAD_SETTINGS, _body(models.TenantName, tenant=tenant))
        return models.RecordingSettings.model_validate(answer)

    async def recording_open(self, tenant: str, meta: RecordingMeta) -> int:
        """Store a session's metadata; how many of its parts the store has."""
        body = _body(models.RecordingOpen, tenant=tenant, meta=meta)
        answer = await self._call(routes.UPLOAD_OPEN, body)
        return int(answer["parts"])

    async def recording_part(
        self,
        tenant: str,
        session_id: str,
        server_id: str,
        previous: str,
        info: PartInfo,
        data: bytes,
    ) -> None:
        body = _body(
            models.RecordingPartUpload,
            tenant=tenant,
            session_id=session_id,
            server_id=server_id,
            previous=previous,
            info=info,
            data=base64.b64encode(data).decode(),
        )
        await self._call(routes.UPLOAD_PART, body)

    async def recording_alive(self, tenant: str, session_id: str, server_id: str) -> None:
        body = _body(
            models.RecordingAlive, tenant=tenant, session_id=session_id, server_id=server_id
        )
        await self._call(routes.UPLOAD_ALIVE, body)

    async def recording_complete(
        self, tenant: str, session_id: str, server_id: str, parts: int, end: SessionEnd
    ) -> None:
        body = _body(
            models.RecordingComplete,
            tenant=tenant,
            session_id=session_id,
            server_id=server_id,
            parts=parts,
            end=end,
        )
        await self._call(routes.UPLOAD_COMPLETE, body)

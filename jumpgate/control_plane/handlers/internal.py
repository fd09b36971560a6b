"""Routes only proxies call: tunnel and session authentication, presence, CA lookups.

This resolver is never mounted on the public HTTPS front. Locally the daemon hands it to
the proxy as an in-process transport; on AWS it is a separate function that only the proxy's
IAM role may invoke. So its callers are trusted and it takes no user credentials.
"""

import base64
import binascii
import logging
from collections.abc import Iterable

from jumpgate.control_plane import errors
from jumpgate.control_plane.handlers.api import (
    Handler,
    answer_problems,
    guarded,
    signed_trust,
)
from jumpgate.control_plane.handlers.resolver import ConcurrentResolver
from jumpgate.control_plane.locks import TenantLock, policy_revision
from jumpgate.control_plane.nodes import NodeInfo
from jumpgate.control_plane.plane import ControlPlane
from jumpgate.control_plane.session_access import access_refusal
from jumpgate.protocol import models, routes
from jumpgate.protocol.recording import MAX_PART_BYTES
from jumpgate.protocol.trust import SignedTrust

logger = logging.getLogger(__name__)

MAX_INTERNAL_BODY_BYTES = MAX_PART_BYTES * 4 // 3 + 64 * 1024
"""A recording part in base64 with its fields: under Lambda's 6 MB invoke payload."""


def build_internal_app(plane: ControlPlane) -> ConcurrentResolver:
    """The internal resolver bound to ``plane``."""
    app = ConcurrentResolver(enable_validation=True, response_validation_error_http_code=500)

    @app.post(routes.TENANT_BY_USER_CA.path)
    def tenant_by_user_ca(body: models.TenantByUserCA) -> models.TenantName:
        return models.TenantName(tenant=plane.tenants.by_user_ca(body.public_key))

    @app.post(routes.TUNNEL_AUTH.path)
    def tunnel_auth(body: models.TunnelAuth) -> models.TunnelNode:
        record = plane.nodes.authenticate_tunnel(body.tenant, body.host_id, body.public_key)
        return models.TunnelNode(
            tenant=body.tenant, host_id=record.host_id, nodename=record.nodename
        )

    @app.post(routes.SESSION_AUTH.path)
    def session_auth(body: models.SessionAuth) -> models.SessionVerdict:
        """Who is refused: the node, the user, or this user on this node (roles, locks)."""
        node_refused = user_refused = access_refused = None
        node = user = None
        try:
            node = plane.nodes.authenticate_tunnel(body.tenant, body.host_id, body.public_key)
        except errors.JumpgateError as exc:
            node_refused = str(exc)
        try:
            user = plane.users.check_access(body.tenant, body.user, body.user_id)
        except errors.JumpgateError as exc:
            user_refused = str(exc)
        if node is not None and user is not None:
            access_refused = access_refusal(
                plane.roles, plane.locks, body.tenant, user, node, body.login
            )
        return models.SessionVerdict(
            node_refused=node_refused, user_refused=user_refused, access_refused=access_refused
        )

    @app.post(routes.LOCK_FEED.path)
    def lock_feed(
        body: models.LockFeedRequest | None = None,
    ) -> models.LockFeed | models.LockFeedBefore:
        """Every lock in force and every tenant's roles revision, polled by each proxy each
        second: nothing more when the revision it holds is current, else a page at a time
        (docs/decisions/0035). A proxy of before 0035 sends no body: what it got before."""
        if body is None:
            return models.LockFeedBefore(
                locks=_wire(plane.locks.feed()),
                role_revisions=plane.roles.revisions(),
            )
        revision = policy_revision(plane.store)  # before the listing: see policy_moved
        if body.revision == revision and not body.cursor:
            return models.LockFeed(locks=[], revision=revision, unchanged=True)
        page = plane.locks.feed_page(body.cursor)  # a cursor it did not give: 400
        return models.LockFeed(
            locks=_wire(page.locks),
            role_revisions={} if body.cursor else plane.roles.revisions(),
            revision=revision,
            next_cursor=page.cursor or "",
        )

    @app.post(routes.ROLE_DEFINITIONS.path)
    def role_definitions(body: models.RoleDefinitionsRequest) -> models.RoleList:
        """The current definitions of the roles a certificate names, for its node; a name
        with no role is left out (it grants nothing)."""
        return models.RoleList(roles=plane.roles.resolve(body.tenant, body.names))

    @app.post(routes.AUDIT_INTAKE.path, status_code=204)
    def audit(body: models.AuditRecords) -> None:
        """Store a proxy's events, except those of tenants that do not exist: a proxy records
        refused logins under the tenant a request's ``Host`` names, which anyone can make up
        (one row per made-up name otherwise). They are counted in one log line, and the
        answer is still 204: there is nothing to send again."""
        exist = {tenant: _exists(plane, tenant) for tenant in {r.tenant for r in body.events}}
        unknown = [record for record in body.events if not exist[record.tenant]]
        if unknown:
            logger.info(
                "audit events for unknown tenants dropped",
                extra={
                    "events": len(unknown),
                    "tenants": sum(not known for known in exist.values()),
                    "types": sorted({str(record.type) for record in unknown}),
                },
            )
        for record in body.events:
            if not exist[record.tenant]:
                continue
            if record.time.tzinfo is None:
                raise errors.InvalidRequest(
                    f"audit event {record.type}: field 'time' has no time zone"
                )
            try:
                plane.audit.emit(
                    record.type,
                    record.tenant,
                    outcome=record.outcome,
                    time=record.time,
                    **record.fields,
                )
            except ValueError as exc:  # fields that do not fit the event
                raise errors.InvalidRequest(f"audit event {record.type}: {exc}") from exc

    @app.post(routes.RENEW_HOST_CERT.path)
    def renew_host_cert(body: models.HostCertRenewal) -> models.HostCertificate:
        return models.HostCertificate(certificate=plane.tokens.renew(body.tenant, body.host_id))

    @app.post(routes.NODE_TRUST.path)
    def trust(body: models.TrustRequest) -> SignedTrust:
        """The trust document a proxy pushes to a node on its tunnel's control channel."""
        return signed_trust(plane, body.tenant, body.nonce)

    @app.post(routes.PRESENCE.path, status_code=204)
    def presence(body: models.Presence) -> None:
        info = None
        if body.proxy is not None:
            info = NodeInfo(body.hostname, body.addr, body.version, dict(body.labels))
        plane.nodes.set_presence(body.tenant, body.host_id, proxy=body.proxy, info=info)

    @app.post(routes.NODE_REMOVALS.path)
    def node_removals() -> models.NodeRemovals:
        return models.NodeRemovals(
            nodes=[
                models.RemovedNode(tenant=r.tenant, host_id=r.host_id, nodename=r.nodename)
                for r in plane.nodes.removals()
            ]
        )

    @app.post(routes.PROXY_ALIVE.path, status_code=204)
    def proxy_alive(body: models.ProxyAlive) -> None:
        plane.nodes.proxy_alive(body.proxy, body.peer_addr)

    @app.post(routes.PROXY_CERT.path)
    def proxy_cert(body: models.ProxyCertRequest) -> models.ProxyCertificates:
        return plane.proxies.certify(body.proxy, body.public_key)

    @app.post(routes.LOCATE.path)
    def locate(body: models.Locate) -> models.NodeLocation:
        node, proxy = plane.nodes.locate(body.tenant, body.name)
        return models.NodeLocation(
            tenant=body.tenant,
            host_id=node.host_id,
            nodename=node.nodename,
            public_key=node.public_key,
            proxy=proxy.proxy_id,
            peer_addr=proxy.peer_addr,
        )

    @app.post(routes.UPLOAD_SETTINGS.path)
    def recording_settings(body: models.TenantName) -> models.RecordingSettings:
        return plane.recordings.settings(body.tenant)

    @app.post(routes.UPLOAD_OPEN.path)
    def recording_open(body: models.RecordingOpen) -> models.RecordingOpened:
        return models.RecordingOpened(parts=plane.recordings.opened(body.tenant, body.meta))

    @app.post(routes.UPLOAD_PART.path, status_code=204)
    def recording_part(body: models.RecordingPartUpload) -> None:
        try:
            data = base64.b64decode(body.data, validate=True)
        except binascii.Error as exc:
            raise errors.InvalidRequest(f"part data is not base64: {exc}") from exc
        plane.recordings.store_part(
            body.tenant,
            body.session_id,
            server_id=body.server_id,
            previous=body.previous,
            info=body.info,
            data=data,
        )

    @app.post(routes.UPLOAD_ALIVE.path, status_code=204)
    def recording_alive(body: models.RecordingAlive) -> None:
        plane.recordings.alive(body.tenant, body.session_id, body.server_id)

    @app.post(routes.UPLOAD_COMPLETE.path, status_code=204)
    def recording_complete(body: models.RecordingComplete) -> None:
        plane.recordings.complete(
            body.tenant, body.session_id, body.end, server_id=body.server_id, parts=body.parts
        )

    answer_problems(app)
    return app


def make_internal_handler(plane: ControlPlane) -> Handler:
    """The Lambda-shaped entry point of the internal routes."""
    return guarded(build_internal_app(plane), max_body=MAX_INTERNAL_BODY_BYTES)


def _exists(plane: ControlPlane, tenant: str) -> bool:
    try:
        plane.tenants.get(tenant)
    except errors.UnknownTenant:
        return False
    return True


def _wire(locks: Iterable[TenantLock]) -> list[models.TenantLock]:
    """The control plane's locks in force as the lock feed carries them."""
    return [models.TenantLock(tenant=t.tenant, lock=t.lock) for t in locks]

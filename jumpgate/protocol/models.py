"""Request and response bodies of the ``/v1`` API.

The server validates requests with these models (and generates its OpenAPI document from
them); clients build requests and read responses with the same classes.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from jumpgate.protocol import names
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.invalid import rule
from jumpgate.protocol.recording import PartInfo, RecordingMeta, RecordingMode, SessionEnd
from jumpgate.protocol.resources import Lock, LockMessage, LockTarget, Name
from jumpgate.protocol.resources import Role as RoleResource
from jumpgate.protocol.trust import NONCE_PATTERN, SignedTrust


class Role(StrEnum):
    """The preset roles every tenant has (``protocol.policy.PRESETS``); a tenant may add
    its own (``protocol.resources.Role``)."""

    ADMIN = "admin"
    """Manages its tenant: every resource, every node as the user's logins."""
    ACCESS = "access"
    """Reaches every node as the user's logins; reads the user's own sessions."""
    AUDITOR = "auditor"
    """Reads recorded sessions and the audit log; reaches no node."""


class SystemRole(StrEnum):
    """What a join token lets its bearer join as."""

    NODE = "node"
    """Joins a server as a node (``jumpgate start --services=node``)."""
    PROXY = "proxy"
    """Joins a proxy to the platform's fleet (proxy peering)."""


Tenant = Annotated[str, Field(max_length=63), AfterValidator(names.check_tenant_name)]
"""A tenant's name: a DNS label (its subdomain), checked before any store key is built."""
UserName = Annotated[str, Field(max_length=128), AfterValidator(names.check_user_name)]
Login = Annotated[str, Field(max_length=32), AfterValidator(names.check_login)]
NodeName = Annotated[str, Field(max_length=253), AfterValidator(names.check_nodename)]
RoleName = Name
"""A role's name: a preset's (``admin``, ``access``, ``auditor``) or one a tenant wrote."""
PASSWORD_LENGTH = (12, 128)
"""A password's length, least and most: the platform's rule, checked by ``jump signup`` too
before it asks for the password again."""
Password = Annotated[
    str,
    Field(min_length=PASSWORD_LENGTH[0], max_length=PASSWORD_LENGTH[1]),
    rule(f"{PASSWORD_LENGTH[0]} to {PASSWORD_LENGTH[1]} characters", show="length"),
]
OpenSSHKey = Annotated[str, Field(min_length=16, max_length=8192)]
Secret = Annotated[
    str,
    Field(min_length=16, max_length=256, pattern=r"^[A-Za-z0-9_\-]+$"),
    rule("16 to 256 letters, digits, '-' or '_'", show="length"),
]
OTP = Annotated[
    str, Field(pattern=r"^[0-9]{6}$"), rule("the 6 digits your authenticator app shows")
]
TTLSeconds = Annotated[int, Field(ge=60, le=30 * 86400), rule("from 1m to 30d", show="duration")]
Nonce = Annotated[str, Field(pattern=NONCE_PATTERN)]
"""A node's nonce, echoed in the trust document it asked for (``protocol.trust``)."""


class _Model(BaseModel):
    """Strict, immutable bodies whose validators are built when first used.

    Building a model's validator costs about as much as importing it again; a control-plane
    function serves a few of these routes and a client sends a few requests, so each builds
    only the models it touches (``defer_build``) instead of all fifty at import.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class SignupRequest(_Model):
    """Accept an invite: set a password; the server enrols a TOTP secret."""

    token: Secret
    password: Password


class SignupResponse(_Model):
    """The TOTP secret to put in an authenticator app, shown once."""

    tenant: Tenant
    user: str
    totp_secret: str
    otpauth_uri: str


class LoginRequest(_Model):
    """Password and one-time code in exchange for a certificate of ``public_key``."""

    user: UserName
    password: Annotated[str, Field(min_length=1, max_length=128)]
    otp: OTP
    public_key: OpenSSHKey
    ttl_seconds: TTLSeconds | None = None


class CAKeys(_Model):
    """A tenant's trusted CA public keys (OpenSSH format, each active key first) and the pin
    of its active host CA key."""

    tenant: Tenant
    user_ca_keys: list[str]
    host_ca_keys: list[str]
    ca_pin: str


class LoginResponse(_Model):
    """A short-lived SSH user certificate and what it grants."""

    tenant: Tenant
    user: str
    roles: list[str]
    logins: list[str]
    certificate: str
    valid_before: datetime
    ca: CAKeys


class CAInfo(_Model):
    """One CA of a tenant as ``jumpctl status`` shows it."""

    kind: Literal["user", "host"]
    key_type: str
    fingerprint: str  # of the active key, which signs
    trusted: list[str] = Field(default_factory=list)  # fingerprints of every key it trusts


class ClusterStatus(_Model):
    """``jumpctl status``: the cluster name, its CAs and the pin agents check."""

    cluster_name: str
    server_version: str
    ca_pin: str
    cas: list[CAInfo]


class UserCreateRequest(_Model):
    """Invite a user; they choose a password with ``jump signup``."""

    name: UserName
    logins: list[Login] = Field(default_factory=list, max_length=64)
    roles: list[RoleName] = Field(
        default_factory=lambda: [Role.ACCESS.value], min_length=1, max_length=16
    )
    invite_ttl_seconds: TTLSeconds = 3600


class UserUpdateRequest(_Model):
    """Change a user's roles or logins (the ``logins`` trait); what is not given is kept.
    With ``revision``, refused if the user changed since it was read (``jumpctl edit``)."""

    roles: list[RoleName] | None = Field(default=None, min_length=1, max_length=16)
    logins: list[Login] | None = Field(default=None, max_length=64)
    revision: str = Field(default="", max_length=128)


class UserCreated(_Model):
    """The invite token to hand to the new user."""

    user: str
    invite_token: str
    expires: datetime


class UserLockRequest(_Model):
    """Lock a user out of the API and of new SSH connections; no ttl: until unlocked."""

    message: LockMessage = ""
    ttl_seconds: TTLSeconds | None = None


class UserInfo(_Model):
    """A user as ``jumpctl users ls`` shows it; ``lock`` says why and until when if locked."""

    name: str
    roles: list[str]
    logins: list[str]
    status: Literal["invited", "active", "locked"]
    created: datetime
    lock: str | None = None
    revision: str = ""  # the record's revision: an update naming it is refused if it moved on


class UserList(_Model):
    users: list[UserInfo]


class RoleList(_Model):
    """Every role of the cluster, presets included; each ``metadata.revision`` set."""

    roles: list[RoleResource]


class LockRequest(_Model):
    """Create a lock: whom it stops, why, and until when (neither ttl nor expires: until
    removed)."""

    target: LockTarget
    message: LockMessage = ""
    ttl_seconds: TTLSeconds | None = None
    expires: datetime | None = None


class LockList(_Model):
    locks: list[Lock]


class TenantLock(_Model):
    """Internal: a lock in force, and its tenant."""

    tenant: Tenant
    lock: Lock


class LockFeedRequest(_Model):
    """Internal: a proxy's poll of the locks. ``revision``: the one it holds (``""``: none
    yet); ``cursor``: the next page of a reading begun (``LockFeed.next_cursor``)."""

    revision: str = Field(default="", max_length=64)
    cursor: str = Field(default="", max_length=2048)


class LockFeedBefore(_Model):
    """Internal: the lock feed as a proxy of the release before 0035 reads it (it sends no
    body, and refuses fields it does not know): every lock in force, in one answer."""

    locks: list[TenantLock]
    role_revisions: dict[str, str] = Field(default_factory=dict)


class LockFeed(_Model):
    """Internal: every lock in force on the platform, for proxies to end what they match
    (and tell their nodes), and each tenant's roles revision (moved by every role write:
    a node then drops the role definitions it holds), a page at a time.

    ``revision`` moves with every lock or role written; a poll naming the current one is
    answered ``unchanged`` with nothing else. Otherwise the first page carries the roles
    revisions, and each page up to ``FEED_PAGE`` locks and the ``next_cursor`` of the next
    (``""``: the last). A lock that expires moves nothing: a proxy drops it at its expiry."""

    locks: list[TenantLock]
    role_revisions: dict[str, str] = Field(default_factory=dict)
    revision: str = ""
    unchanged: bool = False
    next_cursor: str = ""


class RoleDefinitionsRequest(_Model):
    """Internal: the definitions of roles a certificate names, for a node to check again."""

    tenant: Tenant
    names: list[str] = Field(max_length=64)


class TokenCreateRequest(_Model):
    """Issue a join token; ``token`` sets the value, else the server picks one."""

    roles: list[SystemRole] = Field(default_factory=lambda: [SystemRole.NODE], min_length=1)
    ttl_seconds: TTLSeconds = 1800
    token: Secret | None = None


class TokenInfo(_Model):
    """A join token; static tokens come from the config file and never expire."""

    token: str
    roles: list[SystemRole]
    expires: datetime | None
    static: bool = False


class TokenList(_Model):
    tokens: list[TokenInfo]


class TokenCreated(_Model):
    """A new join token and the CA pin a node checks before it joins."""

    token: str
    roles: list[SystemRole]
    expires: datetime
    ca_pin: str
    self_signed_web_certificate: bool = False  # so the join command needs --insecure


class JoinRequest(_Model):
    """A node's host key and name, presented with a join token."""

    token: Secret
    public_key: OpenSSHKey
    nodename: NodeName
    nonce: Nonce | None = None  # echoed in the answer's trust document


class JoinResponse(_Model):
    """The node's identity: its uuid, host certificate, the tenant's CA keys, and what the
    node trusts signed by the host CA (the node believes only that: ``protocol.trust``)."""

    host_id: str
    certificate: str
    ca: CAKeys
    trust: SignedTrust


class Ping(_Model):
    """``/webapi/ping``: who answers and where its listeners are."""

    server_version: str
    protocol_version: str
    cluster_name: str | None
    ssh_public_addr: str
    tunnel_public_addr: str
    proxy_host_keys: list[str] = Field(default_factory=list)


class Problem(_Model):
    """RFC 9457 problem details; ``type`` is one of ``ProblemType``."""

    type: str
    title: str
    status: int
    detail: str


class NodeView(_Model):
    """A node as ``jump ls`` and ``jumpctl nodes ls`` show it."""

    host_id: str
    nodename: str
    hostname: str
    addr: str
    version: str
    labels: dict[str, str]
    online: bool
    joined: datetime


class NodeList(_Model):
    nodes: list[NodeView]


class TenantByUserCA(_Model):
    """Internal: which tenant a user CA key belongs to."""

    public_key: OpenSSHKey


class TenantName(_Model):
    tenant: Tenant


class TunnelAuth(_Model):
    """Internal: a proxy asks whether a tunnel's key is that of a joined node."""

    tenant: Tenant
    host_id: str
    public_key: OpenSSHKey


class SessionAuth(TunnelAuth):
    """Internal: may this certificate's user reach this node now? Asked per new connection.
    ``login`` is the login asked for when the proxy knows it ("" for ``ssh -J``, whose
    login only the node sees)."""

    user: str
    user_id: str
    login: str = Field(default="", max_length=32)


class SessionVerdict(_Model):
    """Internal: why the node, the user or the access is refused; all ``None`` when the
    session may go. ``access_refused`` is the roles' or a lock's one line."""

    node_refused: str | None = None
    user_refused: str | None = None
    access_refused: str | None = None


class AuditRecord(_Model):
    """Internal: an event a proxy saw, for the control plane to stamp and keep."""

    type: EventType
    tenant: Tenant
    outcome: Literal["I", "W", "E"] = "I"
    time: datetime
    fields: dict[str, str | int | bool | None] = Field(default_factory=dict, max_length=32)


class AuditRecords(_Model):
    events: list[AuditRecord] = Field(max_length=100)


class TunnelNode(_Model):
    """Internal: the node a tunnel belongs to."""

    tenant: Tenant
    host_id: str
    nodename: str


class Presence(_Model):
    """Internal: a node's tunnel went up on ``proxy`` (with what it reports) or down."""

    tenant: Tenant
    host_id: str
    proxy: str | None
    hostname: str = ""
    addr: str = ""
    version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class ProxyAlive(_Model):
    """Internal: a proxy's liveness beat, once a minute for all its tunnels, and where other
    proxies reach it (``HOST:PORT`` of its peer listener; empty when it does not peer)."""

    proxy: str
    peer_addr: str = Field(default="", max_length=300)


class RemovedNode(_Model):
    """Internal: a node removed a moment ago; a proxy holding its tunnel closes it."""

    tenant: Tenant
    host_id: str
    nodename: str


class NodeRemovals(_Model):
    """Internal: the nodes removed in the last few minutes, across tenants (for proxies)."""

    nodes: list[RemovedNode]


class Locate(_Model):
    """Internal: where is the node a user asked for (not on this proxy)?"""

    tenant: Tenant
    name: str = Field(min_length=1, max_length=300)


class NodeLocation(_Model):
    """Internal: the node, and the live proxy holding its tunnel."""

    tenant: Tenant
    host_id: str
    nodename: str
    public_key: str  # the key its tunnel authenticated with, rechecked per session
    proxy: str
    peer_addr: str


class ProxyCertRequest(_Model):
    """Internal: a proxy asks for its peering certificates for a key it holds."""

    proxy: str = Field(min_length=1, max_length=100)
    public_key: str = Field(min_length=1, max_length=16000)


class ProxyCertificates(_Model):
    """Internal: a proxy's peering certificates (host and user, principal: its id) and the
    platform's proxy CA that signed them, which its peers must have signed theirs with."""

    host_certificate: str
    user_certificate: str
    ca: str
    expires: datetime


class HostCertRenewal(_Model):
    """Internal: a tunnel-authenticated node asks for a fresh host certificate."""

    tenant: Tenant
    host_id: str


class TrustRequest(_Model):
    """Internal: the trust document for a tunnel-authenticated node, answering its nonce."""

    tenant: Tenant
    nonce: Nonce


class HostCertificate(_Model):
    certificate: str


class RecordingSettings(_Model):
    """A tenant's recording settings (``jumpctl recordings mode``)."""

    mode: RecordingMode = RecordingMode.NODE
    record_exec: bool = True  # exec sessions (``jump ssh node cmd``) are recorded too


class RecordingInfo(_Model):
    """A recording as it stands: what it is of, its parts so far, and its end when complete."""

    meta: RecordingMeta
    parts: list[PartInfo]
    complete: bool
    end: SessionEnd | None = None


class RecordingPart(_Model):
    """One part of a recording for playback: a gzip member of frames, base64."""

    index: int
    sha256: str
    data: str
    complete: bool  # the recording was complete when this was read


class RecordingRow(_Model):
    """One line of ``jump recordings ls``."""

    session_id: str
    user: str = ""
    login: str = ""
    nodename: str = ""
    server_id: str = ""
    kind: str = ""
    started: str = ""
    ended: str = ""
    size: int = 0
    synthesized: bool = False


class RecordingList(_Model):
    recordings: list[RecordingRow]
    cursor: str | None = None


class RecordingVerdict(_Model):
    """``jumpctl recordings verify``: ``ok`` when every part is as it was recorded."""

    session_id: str
    ok: bool
    complete: bool
    parts: int
    problems: list[str]


class RecordingOpen(_Model):
    """Internal: a node starts (or resumes) uploading a session; the proxy stamps tenant and
    server id."""

    tenant: Tenant
    meta: RecordingMeta


class RecordingOpened(_Model):
    parts: int


class RecordingComplete(_Model):
    """Internal: every part is stored and the session ended."""

    tenant: Tenant
    session_id: str
    server_id: str
    parts: int
    end: SessionEnd


class RecordingPartUpload(_Model):
    """Internal: one part a node uploaded, as the proxy hands it on (``data`` base64)."""

    tenant: Tenant
    session_id: str
    server_id: str
    previous: str = Field(pattern="^[0-9a-f]{64}$")
    info: PartInfo
    data: str


class RecordingAlive(_Model):
    """Internal: a quiet session is still going."""

    tenant: Tenant
    session_id: str
    server_id: str

"""The control plane's services wired over one store, secret box and clock."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from jumpgate.control_plane.audit.base import RETENTION, Auditor, AuditStore, Sink
from jumpgate.control_plane.authn import Authenticator
from jumpgate.control_plane.ca import Authorities
from jumpgate.control_plane.clock import Clock, SystemClock
from jumpgate.control_plane.locks import LockService
from jumpgate.control_plane.login import LoginService
from jumpgate.control_plane.nodes import GONE_AFTER, NodeService
from jumpgate.control_plane.proxies import ProxyAuthority
from jumpgate.control_plane.recordings.base import RecordingStore
from jumpgate.control_plane.recordings.service import GRACE, RecordingService
from jumpgate.control_plane.roles import RoleService
from jumpgate.control_plane.secrets import SecretBox
from jumpgate.control_plane.store import Store
from jumpgate.control_plane.tenants import TenantCreated, TenantService
from jumpgate.control_plane.tokens import StaticToken, TokenService
from jumpgate.control_plane.users import BCRYPT_ROUNDS, UserService
from jumpgate.protocol import ports
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.certs import KeyType
from jumpgate.protocol.models import Role
from jumpgate.protocol.names import check_tenant_name


@dataclass(frozen=True)
class Settings:
    """What the control plane must know of how the platform is addressed."""

    public_addr: str = "localhost"  # tenants are served as NAME.<public_addr>
    ssh_public_port: int = ports.SSH  # where users' SSH reaches the proxy
    tunnel_public_port: int = ports.TUNNEL  # where node agents dial their tunnels
    static_tokens: tuple[StaticToken, ...] = ()  # join tokens from the config file
    proxy_host_keys: tuple[str, ...] = ()  # SSH host keys of the proxies, for agents to verify
    self_signed_web_certificate: bool = False  # HTTPS is self-signed: join commands say --insecure
    web_certificate_sha256: tuple[str, ...] = ()  # digests of self-signed web certificates
    node_gone_after: timedelta = GONE_AFTER  # offline nodes leave listings after this
    bcrypt_rounds: int = BCRYPT_ROUNDS  # password hashing cost (2^rounds); 10 by default
    recording_grace: timedelta = GRACE  # a recording quiet this long is completed by the platform

    def __post_init__(self) -> None:
        if not self.public_addr or "/" in self.public_addr or ":" in self.public_addr:
            raise ValueError(f"public_addr {self.public_addr!r} must be a host name, no port")
        if not 4 <= self.bcrypt_rounds <= 16:
            raise ValueError("bcrypt_rounds must be between 4 and 16")
        for token in self.static_tokens:
            check_tenant_name(token.tenant)
            if len(token.token) < 16:
                raise ValueError(f"static token for {token.tenant} is shorter than 16 characters")


class ControlPlane:
    """Every control-plane service, sharing one store, secret box, audit log and clock."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        *,
        audit: AuditStore,
        recordings: RecordingStore,
        settings: Settings | None = None,
        clock: Clock | None = None,
        sinks: Sequence[Sink] = (),
        retention: timedelta = RETENTION,
    ) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.clock = clock or SystemClock()
        self.audit = Auditor(audit, self.clock, sinks=sinks, retention=retention)
        self.authorities = Authorities(store, box)
        self.roles = RoleService(store)
        self.locks = LockService(store, self.clock)
        self.users = UserService(
            store, box, self.clock, self.locks, bcrypt_rounds=self.settings.bcrypt_rounds
        )
        self.tenants = TenantService(store, box, self.clock, self.authorities, self.users)
        self.login = LoginService(store, box, self.clock, self.authorities, self.users, self.roles)
        self.tokens = TokenService(
            store,
            box,
            self.clock,
            self.authorities,
            self.settings.static_tokens,
            public_addr=self.settings.public_addr,
        )
        self.authn = Authenticator(store, self.clock, self.authorities, self.users, self.roles)
        self.nodes = NodeService(store, self.clock, gone_after=self.settings.node_gone_after)
        self.proxies = ProxyAuthority(store, box, self.clock)
        self.recordings = RecordingService(
            store, box, self.clock, recordings, self.audit, grace=self.settings.recording_grace
        )

    def create_tenant(
        self,
        name: str,
        *,
        admin: str,
        logins: list[str],
        key_type: KeyType = KeyType.ED25519,
        operator: str = "",
    ) -> TenantCreated:
        """Create a tenant with its CAs and an invited admin, and audit both."""
        created = self.tenants.create(name, admin=admin, logins=logins, key_type=key_type)
        self.audit.emit(
            EventType.TENANT_CREATE, name, user=operator, ca_key_type=key_type.value, admin=admin
        )
        self.audit.emit(
            EventType.USER_CREATE,
            name,
            user=operator,
            name=admin,
            roles=[Role.ADMIN.value, Role.ACCESS.value],
            logins=logins,
        )
        return created

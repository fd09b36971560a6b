"""The API's calls as values: a route, the body model it takes, the model it answers with.

A ``Call`` does no I/O: ``client.Client.send`` and ``client.AsyncClient.send`` make it, so
both clients speak every route the same way, with the same models the server validates
with (``protocol.models``). Answers are read leniently about unknown fields (a newer
platform may add some) and strictly about the fields this version knows; an audit event keeps
the fields of its type, which ride along as extras.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel

from jumpgate.protocol import models, routes
from jumpgate.protocol.audit import AuditPage
from jumpgate.protocol.resources import Lock
from jumpgate.protocol.resources import Role as RoleResource
from jumpgate.protocol.routes import Route
from jumpgate.protocol.trust import SignedTrust

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Query = Sequence[tuple[str, str]]
"""Query parameters in order; a name may repeat (``type=a&type=b``)."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    route: Route
    decode: Callable[[object], T]  # the answer's JSON (``None`` for none) to its model
    answer_name: str  # what the answer should be, for the error when it is not
    body: BaseModel | None = None
    params: dict[str, str | int] = field(default_factory=dict)  # the path's parameters
    query: Query = ()

    @property
    def target(self) -> str:
        """The path and query, percent-encoded."""
        path = self.route.url(**self.params)
        return f"{path}?{urlencode(list(self.query))}" if self.query else path


def _model(model: type[M]) -> Callable[[object], M]:
    if model is AuditPage:
        # Its events carry their type's fields as extras (``extra="allow"``): overriding
        # ``extra`` for the whole answer would drop them, and the page ignores unknown ones
        return lambda payload: model.model_validate(payload)
    return lambda payload: model.model_validate(payload, extra="ignore")


def _none(_: object) -> None:
    return None


def _call(route: Route, model: type[M], **fields: object) -> Call[M]:
    return Call(route, _model(model), model.__name__, **fields)  # type: ignore[arg-type]


def _empty(route: Route, **params: str | int) -> Call[None]:
    return Call(route, _none, "an empty answer", params=params)


# Anyone (the CLIs before login, nodes)


def ping() -> Call[models.Ping]:
    return _call(routes.PING, models.Ping)


def ca() -> Call[models.CAKeys]:
    return _call(routes.CA, models.CAKeys)


def trust(nonce: str) -> Call[SignedTrust]:
    """The signed trust document, answering ``nonce``."""
    return _call(routes.TRUST, SignedTrust, query=[("nonce", nonce)])


def signup(body: models.SignupRequest) -> Call[models.SignupResponse]:
    return _call(routes.SIGNUP, models.SignupResponse, body=body)


def login(body: models.LoginRequest) -> Call[models.LoginResponse]:
    return _call(routes.LOGIN, models.LoginResponse, body=body)


def join(body: models.JoinRequest) -> Call[models.JoinResponse]:
    return _call(routes.JOIN, models.JoinResponse, body=body)


# Signed in


def status() -> Call[models.ClusterStatus]:
    return _call(routes.STATUS, models.ClusterStatus)


def nodes() -> Call[list[models.NodeView]]:
    decode = _model(models.NodeList)
    return Call(routes.NODES, lambda p: decode(p).nodes, "NodeList")


def remove_node(name: str) -> Call[None]:
    return _empty(routes.NODE_REMOVE, name=name)


def users() -> Call[list[models.UserInfo]]:
    decode = _model(models.UserList)
    return Call(routes.USERS, lambda p: decode(p).users, "UserList")


def add_user(body: models.UserCreateRequest) -> Call[models.UserCreated]:
    return _call(routes.USER_ADD, models.UserCreated, body=body)


def remove_user(name: str) -> Call[None]:
    return _empty(routes.USER_REMOVE, name=name)


def user(name: str) -> Call[models.UserInfo]:
    return _call(routes.USER, models.UserInfo, params={"name": name})


def update_user(name: str, body: models.UserUpdateRequest) -> Call[models.UserInfo]:
    return _call(routes.USER_UPDATE, models.UserInfo, body=body, params={"name": name})


def lock_user(name: str, body: models.UserLockRequest) -> Call[models.UserInfo]:
    return _call(routes.USER_LOCK, models.UserInfo, body=body, params={"name": name})


def unlock_user(name: str) -> Call[models.UserInfo]:
    return _call(routes.USER_UNLOCK, models.UserInfo, params={"name": name})


def tokens() -> Call[list[models.TokenInfo]]:
    decode = _model(models.TokenList)
    return Call(routes.TOKENS, lambda p: decode(p).tokens, "TokenList")


def add_token(body: models.TokenCreateRequest) -> Call[models.TokenCreated]:
    return _call(routes.TOKEN_ADD, models.TokenCreated, body=body)


def remove_token(token: str) -> Call[None]:
    return _empty(routes.TOKEN_REMOVE, token=token)


def audit_events(query: Query) -> Call[AuditPage]:
    """A page of the audit log: ``from``, ``to``, ``type``, ``user``, ``order``, ``limit``,
    ``cursor``."""
    return _call(routes.AUDIT_EVENTS, AuditPage, query=query)


def recordings(query: Query) -> Call[models.RecordingList]:
    """A page of finished recordings: ``from``, ``to``, ``order``, ``limit``, ``cursor``."""
    return _call(routes.RECORDINGS, models.RecordingList, query=query)


def recording(session_id: str) -> Call[models.RecordingInfo]:
    return _call(routes.RECORDING, models.RecordingInfo, params={"session_id": session_id})


def recording_part(session_id: str, index: int) -> Call[models.RecordingPart]:
    params = {"session_id": session_id, "index": index}
    return _call(routes.RECORDING_PART, models.RecordingPart, params=params)


def verify_recording(session_id: str) -> Call[models.RecordingVerdict]:
    params = {"session_id": session_id}
    return _call(routes.RECORDING_VERIFY, models.RecordingVerdict, params=params)


def recording_settings() -> Call[models.RecordingSettings]:
    return _call(routes.RECORDING_SETTINGS, models.RecordingSettings)


def set_recording_settings(body: models.RecordingSettings) -> Call[models.RecordingSettings]:
    return _call(routes.RECORDING_SETTINGS_SET, models.RecordingSettings, body=body)


def roles() -> Call[list[RoleResource]]:
    decode = _model(models.RoleList)
    return Call(routes.ROLES, lambda p: decode(p).roles, "RoleList")


def role(name: str) -> Call[RoleResource]:
    """A role, its ``metadata.revision`` set."""
    return _call(routes.ROLE, RoleResource, params={"name": name})


def create_role(body: RoleResource) -> Call[RoleResource]:
    """A new role; refused (409) if one has the name."""
    return _call(routes.ROLE_CREATE, RoleResource, body=body)


def put_role(body: RoleResource) -> Call[RoleResource]:
    """Create or replace a role; with ``metadata.revision``, only if still that revision."""
    return _call(routes.ROLE_PUT, RoleResource, body=body, params={"name": body.name})


def remove_role(name: str) -> Call[None]:
    return _empty(routes.ROLE_REMOVE, name=name)


def locks() -> Call[list[Lock]]:
    decode = _model(models.LockList)
    return Call(routes.LOCKS, lambda p: decode(p).locks, "LockList")


def add_lock(body: models.LockRequest) -> Call[Lock]:
    return _call(routes.LOCK_ADD, Lock, body=body)


def remove_lock(name: str) -> Call[None]:
    return _empty(routes.LOCK_REMOVE, name=name)

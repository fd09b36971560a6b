"""The kinds of resource ``jumpctl get/create/rm/edit`` speak, each as a document.

Every kind reads its items from the API and shows each as a document (``document``: every
field in the model's order, never ``metadata.revision``) or a table row. Roles, users and
locks are also read back from documents (``parse``: a ``DocumentError`` names the field)
and sent (``apply``); tokens and nodes are only shown (``READ_ONLY`` says which command makes
them).

A user's document carries ``status`` (invited, active or locked, and since when): the
platform sets it, so ``create`` and ``edit`` accept it and ignore it, as they ignore a
lock's ``created_by``::

    kind: user
    version: v1
    metadata:
      name: bob
    spec:
      roles: [access]
      traits:
        logins: [ubuntu]
    status: {state: active, created: '2026-12-04T03:00:00Z', lock: ''}
"""

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jumpgate.cli.common import output
from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.jumpctl import users
from jumpgate.cli.jumpctl.context import Context
from jumpgate.protocol import calls, invalid, models
from jumpgate.protocol.client import Client
from jumpgate.protocol.resources import Lock, LockSpec, Metadata, Role

Row = Sequence[str]


class DocumentError(Exception):
    """A document that cannot be sent; ``str()`` is the field and what is wrong with it."""


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserMetadata(_Document):
    name: models.UserName
    revision: str = Field(default="", max_length=128)


class UserTraits(_Document):
    logins: list[models.Login] = Field(default_factory=list, max_length=64)


class UserSpec(_Document):
    roles: list[models.RoleName] = Field(min_length=1, max_length=16)
    traits: UserTraits = Field(default_factory=UserTraits)


class UserDocument(_Document):
    """A user as a document: roles and the ``logins`` trait; ``status`` is ignored."""

    kind: Literal["user"] = "user"
    version: Literal["v1"] = "v1"
    metadata: UserMetadata
    spec: UserSpec
    status: dict[str, object] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.metadata.name


class LockDocument(_Document):
    """A lock to create; the platform names it (``metadata.name`` is ignored) and sets
    ``spec.created_by``."""

    kind: Literal["lock"] = "lock"
    version: Literal["v1"] = "v1"
    metadata: Metadata | None = None
    spec: LockSpec

    @property
    def name(self) -> str:
        return self.metadata.name if self.metadata else ""

    def request(self) -> models.LockRequest:
        spec = self.spec
        return models.LockRequest(target=spec.target, message=spec.message, expires=spec.expires)


def _without_revision(model: BaseModel) -> dict[str, Any]:
    document = model.model_dump(mode="json")
    document["metadata"].pop("revision", None)
    return document


def _labels(labels: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in sorted(labels.items())
    )


def _fields(error: ValidationError, kind: str) -> str:
    """The first thing wrong, as ``key.path: what`` (an unknown key said for documents)."""
    first = error.errors(include_url=False)[0]
    if first["type"] == "extra_forbidden":
        where = invalid.key_path(first["loc"])
        return f"{where}: unknown field: jumpctl get {kind}s shows the fields a {kind} has"
    if first["loc"] == ("version",):  # a Teleport role says v7: say what to write instead
        return f"{invalid.line(first)}: write version: v1 (the one version of Jumpgate's documents)"
    return invalid.line(first)


class Kind:
    """How one kind of resource is read, shown, written and removed."""

    name: ClassVar[str]
    plural: ClassVar[str]
    headers: ClassVar[Sequence[str]]
    made_by: ClassVar[str] = ""  # for a read-only kind: the command that makes one

    def items(self, client: Client) -> list[Any]:
        raise NotImplementedError

    def item(self, client: Client, name: str) -> Any:
        """One item by name; the default looks through ``items``."""
        for found in self.items(client):
            if name in self.names_of(found):
                return found
        raise CLIError(f"{self.name} {name!r} not found: see jumpctl get {self.plural}")

    def names_of(self, item: Any) -> Sequence[str]:
        return (self.document(item)["metadata"]["name"],)

    def document(self, item: Any) -> dict[str, Any]:
        raise NotImplementedError

    def revision(self, item: Any) -> str:
        return ""

    def row(self, item: Any) -> Row:
        raise NotImplementedError

    def parse(self, raw: dict[str, Any]) -> Any:
        """The document as the model ``apply`` sends; ``DocumentError`` if it cannot be."""
        raise DocumentError(f"{self.plural} are not made from documents: use {self.made_by}")

    def apply(self, ctx: Context, value: Any, *, replace: bool, exists: bool) -> None:
        raise NotImplementedError

    def update(self, ctx: Context, value: Any, revision: str) -> None:
        """Replace the item with ``value`` if it is still at ``revision`` (``jumpctl edit``)."""
        raise CLIError(f"{self.plural} are not edited: jumpctl edit takes role/NAME or user/NAME")

    def unchanged(self, item: Any, value: Any) -> bool:
        """Whether sending ``value`` would leave ``item`` as it is."""
        raise NotImplementedError

    def remove(self, client: Client, name: str) -> str:
        raise NotImplementedError


def _validated(model: type[BaseModel], raw: dict[str, Any], kind: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise DocumentError(_fields(exc, kind)) from None


class RoleKind(Kind):
    name = "role"
    plural = "roles"
    headers = ("Role", "Logins", "Node labels", "Denied", "Description")

    def items(self, client: Client) -> list[Role]:
        return client.send(calls.roles())

    def item(self, client: Client, name: str) -> Role:
        return client.send(calls.role(name))

    def document(self, item: Role) -> dict[str, Any]:
        return _without_revision(item)

    def revision(self, item: Role) -> str:
        return item.metadata.revision

    def row(self, item: Role) -> Row:
        allow, deny = item.spec.allow, item.spec.deny
        denied = [*deny.logins, _labels(deny.node_labels)]
        return (
            item.name,
            ",".join(allow.logins),
            _labels(allow.node_labels),
            " ".join(d for d in denied if d),
            item.metadata.description,
        )

    def parse(self, raw: dict[str, Any]) -> Role:
        role: Role = _validated(Role, raw, self.name)
        return role

    def apply(self, ctx: Context, value: Role, *, replace: bool, exists: bool) -> None:
        if replace:
            ctx.client.send(calls.put_role(value))
            print(f"Role {value.name!r} {'replaced' if exists else 'created'}.")
        else:
            ctx.client.send(calls.create_role(value))
            print(f"Role {value.name!r} created.")

    def update(self, ctx: Context, value: Role, revision: str) -> None:
        metadata = value.metadata.model_copy(update={"revision": revision})
        ctx.client.send(calls.put_role(value.model_copy(update={"metadata": metadata})))

    def unchanged(self, item: Role, value: Role) -> bool:
        return _without_revision(item) == _without_revision(value)

    def remove(self, client: Client, name: str) -> str:
        client.send(calls.remove_role(name))
        return f"Role {name!r} removed."


class UserKind(Kind):
    name = "user"
    plural = "users"
    headers = ("User", "Roles", "Logins", "Status", "Created")

    def items(self, client: Client) -> list[models.UserInfo]:
        return client.send(calls.users())

    def item(self, client: Client, name: str) -> models.UserInfo:
        return client.send(calls.user(name))

    def document(self, item: models.UserInfo) -> dict[str, Any]:
        status = {
            "state": item.status,
            "created": output.iso(item.created),
            "lock": item.lock or "",
        }
        return {
            "kind": "user",
            "version": "v1",
            "metadata": {"name": item.name},
            "spec": {"roles": list(item.roles), "traits": {"logins": list(item.logins)}},
            "status": status,
        }

    def revision(self, item: models.UserInfo) -> str:
        return item.revision

    def row(self, item: models.UserInfo) -> Row:
        status = f"locked: {users.lock_shown(item.lock)}" if item.lock else item.status
        return (
            item.name,
            ",".join(item.roles),
            ",".join(item.logins),
            status,
            output.when(item.created),
        )

    def parse(self, raw: dict[str, Any]) -> UserDocument:
        user: UserDocument = _validated(UserDocument, raw, self.name)
        return user

    def apply(self, ctx: Context, value: UserDocument, *, replace: bool, exists: bool) -> None:
        if replace and exists:
            self.update(ctx, value, value.metadata.revision)
            print(f"User {value.name!r} updated.")
            return
        invite = models.UserCreateRequest(
            name=value.name, roles=value.spec.roles, logins=value.spec.traits.logins
        )
        users.print_invite(ctx, ctx.client.send(calls.add_user(invite)))

    def update(self, ctx: Context, value: UserDocument, revision: str) -> None:
        body = models.UserUpdateRequest(
            roles=value.spec.roles, logins=value.spec.traits.logins, revision=revision
        )
        ctx.client.send(calls.update_user(value.name, body))

    def unchanged(self, item: models.UserInfo, value: UserDocument) -> bool:
        # the platform keeps a user's roles sorted: another order is no change
        same_roles = sorted(item.roles) == sorted(value.spec.roles)
        return same_roles and item.logins == value.spec.traits.logins

    def remove(self, client: Client, name: str) -> str:
        client.send(calls.remove_user(name))
        return f"User {name!r} removed."


class LockKind(Kind):
    name = "lock"
    plural = "locks"
    headers = ("ID", "Target", "Message", "Expires", "Created by")

    def items(self, client: Client) -> list[Lock]:
        return client.send(calls.locks())

    def document(self, item: Lock) -> dict[str, Any]:
        return _without_revision(item)

    def row(self, item: Lock) -> Row:
        spec = item.spec
        return (
            item.name,
            target_text(item),
            spec.message,
            output.when(spec.expires),
            spec.created_by,
        )

    def parse(self, raw: dict[str, Any]) -> LockDocument:
        lock: LockDocument = _validated(LockDocument, raw, self.name)
        return lock

    def apply(self, ctx: Context, value: LockDocument, *, replace: bool, exists: bool) -> None:
        made = ctx.client.send(calls.add_lock(value.request()))
        print(f"Lock {made.name} created: {target_text(made)}.")

    def remove(self, client: Client, name: str) -> str:
        client.send(calls.remove_lock(name))
        return f"Lock {name} removed."


def target_text(lock: Lock) -> str:
    """Whom a lock stops, as ``user=bob node=web-1``."""
    target = lock.spec.target.model_dump()
    return " ".join(f"{k}={v}" for k, v in target.items() if v)


class TokenKind(Kind):
    name = "token"
    plural = "tokens"
    headers = ("Token", "System roles", "Expires")
    made_by = "jumpctl tokens add (or jumpctl nodes add)"

    def items(self, client: Client) -> list[models.TokenInfo]:
        return client.send(calls.tokens())

    def document(self, item: models.TokenInfo) -> dict[str, Any]:
        spec = item.model_dump(mode="json", exclude={"token"})
        return {"kind": "token", "version": "v1", "metadata": {"name": item.token}, "spec": spec}

    def row(self, item: models.TokenInfo) -> Row:
        expires = "never (static)" if item.static else output.when(item.expires)
        return (item.token, ",".join(item.roles), expires)

    def remove(self, client: Client, name: str) -> str:
        client.send(calls.remove_token(name))
        return f"Join token {name} revoked; joining with it is refused from now on."


class NodeKind(Kind):
    name = "node"
    plural = "nodes"
    headers = ("Node", "Address", "Labels", "Status", "ID")
    made_by = "jumpctl nodes add"

    def items(self, client: Client) -> list[models.NodeView]:
        return client.send(calls.nodes())

    def names_of(self, item: models.NodeView) -> Sequence[str]:
        return (item.nodename, item.host_id)

    def document(self, item: models.NodeView) -> dict[str, Any]:
        shown = item.model_dump(mode="json")
        spec = {k: shown[k] for k in ("host_id", "hostname", "addr", "version", "labels")}
        status = {k: shown[k] for k in ("online", "joined")}
        return {
            "kind": "node",
            "version": "v1",
            "metadata": {"name": item.nodename},
            "spec": spec,
            "status": status,
        }

    def row(self, item: models.NodeView) -> Row:
        online = "online" if item.online else "offline"
        return (item.nodename, item.addr or "⟵ tunnel", _labels(item.labels), online, item.host_id)

    def remove(self, client: Client, name: str) -> str:
        client.send(calls.remove_node(name))
        return f"Node {name!r} removed; it must join again with a new token."


KINDS: dict[str, Kind] = {
    k.name: k for k in (RoleKind(), UserKind(), TokenKind(), NodeKind(), LockKind())
}
"""Every kind, in the order ``get all`` shows them."""

WRITABLE = tuple(name for name, kind in KINDS.items() if not kind.made_by)

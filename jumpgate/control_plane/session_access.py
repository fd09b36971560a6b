"""Whether a user may reach a node now: the proxy's question for every new connection.

Asked after the node and the user are known to be who they say (``session-auth``): the locks
in force first (a lock's message is what the user should read), then the user's current
roles against the node's labels as last reported (static and command labels). With a login
(``jump ssh``) the roles must allow that login there; without one (``ssh -J``, whose login
only the node sees) some login must reach the node. See docs/decisions/0034.
"""

from jumpgate.control_plane.locks import LockService, message_of
from jumpgate.control_plane.records import NodeRecord, UserRecord
from jumpgate.control_plane.roles import RoleService
from jumpgate.protocol.policy import Subject


def access_refusal(
    roles: RoleService,
    locks: LockService,
    tenant: str,
    user: UserRecord,
    node: NodeRecord,
    login: str = "",
) -> str | None:
    """The one line the user reads when refused, else None."""
    subject = Subject(
        user=user.name,
        user_id=user.id,
        roles=tuple(user.roles),
        node_names=(node.host_id, node.nodename),
        login=login,
    )
    lock = locks.matching(tenant, subject)
    if lock is not None:
        return message_of(lock)
    checker = roles.checker(tenant, user)
    if login:
        decision = checker.login_access(node.nodename, node.labels, login)
    else:
        decision = checker.node_access(node.nodename, node.labels)
    return None if decision else decision.reason

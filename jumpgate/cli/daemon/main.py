"""``jumpgate``: run the platform (``start``), administer tenants, print the version.

``jumpgate tenants ...`` works on the local data dir (or the configured DynamoDB table), as
``tctl`` does on an auth server: it is the operator's tool, not a tenant's.
"""

import argparse
import asyncio
import getpass
import logging
import os
import select
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jumpgate.cli.common import output, version
from jumpgate.cli.common.args import Parser
from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.common.run import run
from jumpgate.cli.daemon import config as config_module
from jumpgate.cli.daemon import data_lock, listeners, logs
from jumpgate.cli.daemon.config import TOKEN_VARIABLE, Config, ConfigError
from jumpgate.node_agent.errors import AgentError
from jumpgate.protocol.certs import KeyType
from jumpgate.protocol.names import split_host_port

if TYPE_CHECKING:
    from jumpgate.cli.daemon.platform import Daemon

logger = logging.getLogger("jumpgate")

TOKEN_FD_VARIABLE = "JUMPGATE_TOKEN_FD"  # noqa: S105 - a variable's name, not a secret
"""The number of the inherited pipe holding the join token (set by ``jumpgate`` itself)."""

_PLATFORM_FLAGS = (
    "data_dir",
    "services",
    "public_addr",
    "web_listen_addr",
    "ssh_listen_addr",
    "tunnel_listen_addr",
    "log_level",
    "diag_addr",
    "node_gone_after",
    "auth_server",
    "token",
    "ca_pin",
    "nodename",
    "labels",
    "insecure",
)


def _add_config_flags(parser: argparse.ArgumentParser, *, listeners: bool) -> None:
    parser.add_argument("-c", "--config", type=Path, help="path to jumpgate.yaml")
    parser.add_argument("--data-dir", help="where state, keys and certificates live")
    parser.add_argument("--public-addr", help="tenants are served as NAME.<public-addr>")
    if listeners:
        parser.add_argument(
            "--services",
            "--roles",  # its name until decision 0026: still read, with a note
            action=_Services,
            help="services to run, e.g. auth,proxy (--roles: the old name)",
        )
        parser.add_argument("--web-listen-addr", help="HTTPS API (default 127.0.0.1:3080)")
        parser.add_argument("--ssh-listen-addr", help="users' SSH (default 127.0.0.1:3023)")
        parser.add_argument("--tunnel-listen-addr", help="node tunnels (default 127.0.0.1:3024)")
        parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
        parser.add_argument(
            "--diag-addr", help="serve /healthz, /readyz, /metrics, e.g. 127.0.0.1:3000"
        )
        parser.add_argument("--node-gone-after", help="offline nodes leave listings after (10m)")
        node = parser.add_argument_group("node service (--services=node)")
        node.add_argument("--auth-server", help="the cluster's address, e.g. acme.localhost:3080")
        node.add_argument(
            "--token",
            help=(
                "join token (first start only): the token itself, or the PATH of a file "
                "holding it: a value that names an existing file is read from that file, and "
                "one with a / must name one. "
                "Default: $JUMPGATE_TOKEN. Prefer the file or the variable; a token value "
                "given here is moved out of the command line (where ps shows it) at start"
            ),
        )
        node.add_argument("--ca-pin", help="sha256:... pin of the cluster's host CA")
        node.add_argument("--nodename", help="this node's name (default: host name)")
        node.add_argument("--labels", help='env=prod,arch=[1h:"uname -m"]')
        node.add_argument(
            "--insecure",
            action="store_true",
            default=None,
            help="accept the platform's self-signed HTTPS certificate, only the one the pinned "
            "CA names (the pin still authenticates everything the node trusts and sends)",
        )


class _Services(argparse.Action):
    """``--services``, or ``--roles`` (its old name), noted so that the daemon says so."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        given = getattr(namespace, "services_flag", None)
        if given is not None and given != option_string:
            parser.error("--roles: renamed --services (decision 0026): give only --services")
        namespace.services_flag = option_string
        setattr(namespace, self.dest, values)
        if option_string == "--roles":
            namespace.renamed_flag = "--roles: renamed --services (decision 0026); still read"


def _config(args: argparse.Namespace) -> Config:
    overrides = {name: getattr(args, name, None) for name in _PLATFORM_FLAGS}
    # Read once and forgotten: nothing the agent starts (label commands) inherits it
    from_environment = os.environ.pop(TOKEN_VARIABLE, "")
    from_environment = _token_from_pipe() or from_environment
    if overrides.get("token") is None and from_environment:
        overrides["token"] = from_environment
    try:
        config = config_module.load(args.config, overrides)
    except ConfigError as exc:
        raise CLIError(str(exc)) from exc
    flag = getattr(args, "renamed_flag", None)
    return config if flag is None else config.noted(flag)


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="jumpgate", description="Run the Jumpgate platform.")
    sub = top.add_subparsers(dest="command", required=True)

    start = sub.add_parser("start", help="run the platform in the foreground")
    _add_config_flags(start, listeners=True)

    demo = sub.add_parser("demo", help="run a local platform with a demo tenant (make up)")
    _add_config_flags(demo, listeners=True)
    demo.add_argument("--tenant", default="demo", help="the demo tenant's name")
    demo.add_argument("--admin", default="admin", help="the demo admin's user name")

    version.register(top, sub)

    tenants = sub.add_parser("tenants", help="create, list and remove tenants")
    tsub = tenants.add_subparsers(dest="tenants_command", required=True)
    create = tsub.add_parser("create", help="create a tenant with its CAs and first admin")
    create.add_argument("name", help="tenant name (a DNS label): served as NAME.<public-addr>")
    create.add_argument("--admin", required=True, help="user name of the first admin")
    create.add_argument("--logins", default="", help="OS logins of the admin, e.g. root,ubuntu")
    create.add_argument(
        "--ca-type", choices=[k.value for k in KeyType], default=KeyType.ED25519.value
    )
    output.add_format(create)
    _add_config_flags(create, listeners=False)
    ls = tsub.add_parser("ls", help="list tenants")
    output.add_format(ls)
    _add_config_flags(ls, listeners=False)
    rm = tsub.add_parser("rm", help="remove a tenant and everything it holds")
    rm.add_argument("name")
    _add_config_flags(rm, listeners=False)
    return top


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _tenants(args: argparse.Namespace) -> int:
    from jumpgate.cli.daemon.platform import open_control_plane
    from jumpgate.control_plane.errors import JumpgateError

    config = _config(args)
    if args.tenants_command != "create":
        _platform_data_exists(config)
    try:
        plane = open_control_plane(config)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    try:
        if args.tenants_command == "create":
            created = plane.create_tenant(
                args.name,
                admin=args.admin,
                logins=_csv(args.logins),
                key_type=KeyType(args.ca_type),
                operator=f"operator:{getpass.getuser()}",
            )
            proxy = f"{created.tenant}.{config.public_addr}:{config.port_of('web_listen_addr')}"
            invite = created.admin_invite
            signup = f"jump signup --proxy={proxy} --insecure {invite.token}"
            if args.format == "json":
                output.emit_json(
                    {
                        "tenant": created.tenant,
                        "admin": invite.user,
                        "invite_token": invite.token,
                        "expires": invite.expires.isoformat(),
                        "ca_pin": created.ca_pin,
                        "proxy": proxy,
                        "signup_command": signup,
                    }
                )
            else:
                print(f"Tenant {created.tenant!r} created; CA pin {created.ca_pin}")
                print(f"Admin {invite.user!r} signs up before {output.when(invite.expires)} with:")
                print(f"  {signup}")
        elif args.tenants_command == "ls":
            records = plane.tenants.list()
            if args.format == "json":
                output.emit_json(
                    [
                        {
                            "name": t.name,
                            "created": t.created.isoformat(),
                            "ca_key_type": t.ca_key_type,
                        }
                        for t in records
                    ]
                )
            else:
                output.table(
                    ["Tenant", "CA key type", "Created"],
                    [(t.name, t.ca_key_type, output.when(t.created)) for t in records],
                )
        else:
            plane.tenants.remove(args.name)
            print(f"Tenant {args.name!r} removed.")
    except (JumpgateError, ValueError) as exc:
        raise CLIError(getattr(exc, "message", str(exc))) from exc
    finally:
        plane.store.close()
    return 0


def _platform_data_exists(config: Config) -> None:
    """``CLIError`` unless the SQLite state a platform made is there: opening the control
    plane creates a master key and empty stores, so ``tenants ls`` on a mistyped or default
    data dir would otherwise make a new platform there and list no tenants. Only ``jumpgate
    start`` and ``tenants create`` make one."""
    storage = config.storage
    if storage.type != "sqlite":
        return
    state = Path(storage.path) if storage.path else config.data_dir / "state.db"
    if not state.is_file():
        where = state if storage.path else config.data_dir
        raise CLIError(
            f"no platform data in {where}: pass --data-dir "
            "(make up keeps the demo's in .jumpgate-demo)"
        )


def _start(args: argparse.Namespace, *, demo: bool = False) -> int:
    config = _config(args)
    if demo and "auth" not in config.services:
        raise CLIError(
            "jumpgate demo runs the control plane itself: keep service auth "
            "(a proxy on the platform's functions is jumpgate start)"
        )
    if demo and "node" not in config.services:
        config = config.model_copy(update={"services": (*config.services, "node")})
    logs.configure(config.log_level)
    for note in config.notes:
        logger.warning(note)
    try:
        if not {"auth", "proxy"} & set(config.services):
            return _run_agent(config)
        return _run_platform(config, args if demo else None)
    except (AgentError, ConfigError) as exc:
        raise CLIError(str(exc)) from exc


def _run_agent(config: Config) -> int:
    from jumpgate.cli.daemon.diag import DiagServer
    from jumpgate.cli.daemon.node import make_agent

    held = data_lock.hold(config.data_dir)  # one agent per identity
    agent = make_agent(config)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        diag = None
        if config.diag_addr:
            diag = DiagServer(agent.tunnel_up.is_set, agent.metric_lines)
            try:  # before the agent joins or dials anything
                await diag.start(*split_host_port(config.diag_addr, 0, listen=True))
            except OSError as exc:
                raise CLIError(listeners.why("diag_addr", config.diag_addr, exc)) from exc
        try:
            await agent.run(stop)
        finally:
            if diag is not None:
                await diag.close()

    try:
        asyncio.run(serve())
    finally:
        data_lock.release(held)
    return 0


def _run_platform(config: Config, demo: argparse.Namespace | None) -> int:
    from jumpgate.cli.daemon.node import agent_config, make_agent
    from jumpgate.cli.daemon.platform import Daemon
    from jumpgate.control_plane.errors import JumpgateError

    if "node" in config.services:
        agent_config(config)  # a bad label fails now, not after the platform is listening
    listeners.check(config, demo=demo is not None)
    held = data_lock.hold(config.data_dir, demo=demo is not None)
    try:
        daemon = Daemon(config)
    except (JumpgateError, ValueError, PermissionError) as exc:
        raise CLIError(getattr(exc, "message", str(exc))) from exc

    async def serve() -> None:
        task = asyncio.create_task(daemon.run())
        waiter = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if daemon.ready.is_set() and "node" in config.services:
            node_config = _demo(daemon, demo.tenant, demo.admin) if demo is not None else config
            daemon.start_agent(make_agent(node_config))
        await task

    try:
        asyncio.run(serve())
    except OSError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        data_lock.release(held)
    return 0


def _demo(daemon: "Daemon", tenant: str, admin: str) -> Config:
    """Make sure the demo tenant, its admin and its node exist; tell a newcomer what to type."""
    from jumpgate.control_plane.errors import NotFound
    from jumpgate.protocol.models import Role

    plane = daemon.plane
    config = daemon.config
    login = getpass.getuser()
    proxy = f"{tenant}.{config.public_addr}:{daemon.web.port}"
    token = None
    if tenant not in {t.name for t in plane.tenants.list()}:
        created = plane.create_tenant(tenant, admin=admin, logins=[login], operator="jumpgate demo")
        token = created.admin_invite.token
    else:
        try:
            user, _ = plane.users.get(tenant, admin)
        except NotFound:
            user = None
        if user is None or user.password_hash is None:  # never signed up: a fresh invite
            if user is not None:
                plane.users.remove(tenant, admin)
            roles = list(user.roles) if user else [Role.ADMIN, Role.ACCESS]
            logins = user.logins if user else [login]
            token = plane.users.add(tenant, admin, logins=logins, roles=roles).token
    join_token = plane.tokens.create(tenant, system_roles=["node"], ttl=timedelta(minutes=5)).token
    node_config = config.model_copy(
        update={
            "data_dir": config.data_dir / "demo-node",
            "auth_server": proxy,
            "token": join_token,
            "ca_pin": plane.tenants.ca_pin(tenant),
            "nodename": config.nodename or "demo-node",
            "labels": config.labels or "env=demo",
            "insecure": True,
        }
    )
    steps = [f"jump signup --proxy={proxy} --insecure {token}"] if token else []
    steps += [
        f"jump login --proxy={proxy} --insecure --user {admin}",
        "jump ls",
        "jump ssh demo-node",
        "mkdir -p -m 700 ~/.ssh && jump config >> ~/.ssh/config   "
        f"# then plain OpenSSH: ssh {login}@demo-node.{tenant}.{config.public_addr}",
    ]
    print(f"\nJumpgate is running: tenant {tenant!r} at https://{proxy} (Ctrl-C stops it).")
    print("Node 'demo-node' runs in this process. In another terminal (. .venv/bin/activate):\n")
    for number, step in enumerate(steps, 1):
        print(f"  {number}. {step}")
    print(flush=True)
    return node_config


def _token_off_the_command_line(argv: list[str]) -> None:
    """Start again, once, holding the join token in neither the command line nor the
    environment: a ``--token`` value or ``$JUMPGATE_TOKEN`` goes into a pipe this process
    inherits, ``$JUMPGATE_TOKEN_FD`` naming it (``_token_from_pipe``).

    A process's command line is readable by every user (``ps``) and its environment by its
    owner and root (/proc/PID/environ), both for its whole life: ``os.environ.pop`` forgets
    a variable but does not erase the block the process started with. A pipe, once read, is
    empty. A file's path is no secret and stays."""
    if not argv or argv[0] not in ("start", "demo"):
        return
    kept: list[str] = []
    token = None
    rest = iter(argv)
    for arg in rest:
        name, equals, value = arg.partition("=")
        if name != "--token":  # flags are taken by their whole name only (no --tok)
            kept.append(arg)
        elif equals:
            token = value
        else:
            token = next(rest, None)
    if token is None or os.path.isfile(token):
        kept, token = list(argv), None
    if token is None:
        token = os.environ.get(TOKEN_VARIABLE) or None
    if token is None:
        return
    secret = token.encode()
    if len(secret) > select.PIPE_BUF:  # written before anyone reads: it must fit the pipe
        sys.exit(
            "jumpgate: error: token: that is not a join token (too long): see jumpctl nodes add"
        )
    reading, writing = os.pipe()
    os.write(writing, secret)
    os.close(writing)
    os.set_inheritable(reading, True)
    environment = {k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE}
    environment[TOKEN_FD_VARIABLE] = str(reading)
    again = [sys.executable, "-m", "jumpgate.cli.daemon.main", *kept]
    # The running interpreter through /proc/self/exe: an agent started by root as another
    # user (setpriv, systemd's User=) may not be able to reach it by its path any more,
    # e.g. an interpreter under /root; argv[0] keeps the path, so the venv is found as before.
    running = "/proc/self/exe" if os.path.exists("/proc/self/exe") else sys.executable
    os.execve(running, again, environment)  # noqa: S606 - ourselves again


def _token_from_pipe() -> str:
    """The join token ``_token_off_the_command_line`` left in the inherited pipe whose
    number ``$JUMPGATE_TOKEN_FD`` holds; the pipe is closed once read."""
    number = os.environ.pop(TOKEN_FD_VARIABLE, "")
    if not number:
        return ""
    try:
        with os.fdopen(int(number), "rb", closefd=True) as pipe:
            return pipe.read().decode().strip()
    except (ValueError, OSError) as exc:
        raise CLIError(
            f"token: cannot read the join token from descriptor {number} ({exc}): give it "
            f"with --token=PATH or ${TOKEN_VARIABLE}"
        ) from exc


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jumpgate``."""
    if argv is None:
        _token_off_the_command_line(sys.argv[1:])
    args = parser().parse_args(argv)

    def dispatch() -> int:
        if args.command == "version":
            return version.show("jumpgate", args.format)
        if args.command == "tenants":
            return _tenants(args)
        return _start(args, demo=args.command == "demo")

    return run("jumpgate", dispatch)


if __name__ == "__main__":
    sys.exit(main())

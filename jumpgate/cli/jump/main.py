"""``jump``: sign up, log in, show and end the session with a cluster."""

import argparse
import getpass
import sys
from datetime import UTC, datetime

import segno
from cryptography.hazmat.primitives import serialization

from jumpgate.cli.common import nodes, output, profile, prompt, version
from jumpgate.cli.common.args import Parser, cluster_address
from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.common.run import run
from jumpgate.cli.jump import recordings
from jumpgate.cli.jump import scp as scp_cmd
from jumpgate.cli.jump import ssh as ssh_cmd
from jumpgate.protocol import calls, models
from jumpgate.protocol.client import Client, Credentials
from jumpgate.protocol.durations import format_duration, parse_duration

PASSWORD_MIN, PASSWORD_MAX = models.PASSWORD_LENGTH


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="jump", description="Reach servers through Jumpgate.")
    sub = top.add_subparsers(dest="command", required=True)

    signup = sub.add_parser("signup", help="accept an invite: set a password, enrol TOTP")
    signup.add_argument("token", help="the invite token an admin gave you")
    signup.add_argument("--proxy", required=True, help="cluster address, e.g. acme.localhost:3080")
    signup.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    signup.add_argument("--insecure", action="store_true", help="accept a self-signed certificate")
    output.add_format(signup)

    login = sub.add_parser("login", help="log in and get a short-lived certificate")
    login.add_argument("--proxy", required=True, help="cluster address, e.g. acme.localhost:3080")
    login.add_argument("--user", default=None, help="user name (default: your OS user name)")
    login.add_argument("--ttl", default="12h", help="certificate lifetime, at most 12h")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.add_argument("--otp", help="the one-time code (else asked for)")
    login.add_argument("--insecure", action="store_true", help="accept a self-signed certificate")
    output.add_format(login)

    ls = sub.add_parser("ls", help="list the nodes you can reach")
    ls.add_argument("filters", nargs="*", metavar="key=value", help="label filters")
    output.add_format(ls)

    ssh_cmd.register(sub)
    scp_cmd.register(sub)
    recordings.register(sub)

    status = sub.add_parser("status", help="show the current login")
    output.add_format(status)
    sub.add_parser("logout", help="delete the current login's key and certificate")
    version.register(top, sub)
    return top


def _reach(proxy: str, insecure: bool) -> tuple[Client, models.Ping]:
    """The cluster at ``proxy`` and its ping, asked before any secret is: a wrong cluster
    name or port, or a missing ``--insecure``, is said before the password is typed."""
    client = Client(cluster_address(proxy, "--proxy"), insecure=insecure)
    ping = client.send(calls.ping())
    if ping.cluster_name is None:
        raise CLIError(
            f"{client.host_header} names no cluster: use --proxy=NAME.<platform address>, "
            f"e.g. acme.{client.host_header}"
        )
    return client, ping


def _checked(password: str) -> str:
    """The password, if the platform's rule takes it: said before it is asked again."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise CLIError(
            f"the password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters "
            f"({len(password)} given): run jump signup again"
        )
    return password


def _signup(args: argparse.Namespace) -> int:
    client, _ = _reach(args.proxy, args.insecure)
    if args.password_stdin:
        password = _checked(prompt.password_from_stdin())
    else:
        password = _checked(
            prompt.ask(
                f"Password ({PASSWORD_MIN}-{PASSWORD_MAX} characters): ",
                needs="password",
                flag="--password-stdin",
            )
        )
        if prompt.ask("Password again: ", needs="password", flag="--password-stdin") != password:
            raise CLIError("the passwords differ: run jump signup again")
    signup = models.SignupRequest(token=args.token, password=password)
    answer = client.send(calls.signup(signup))
    if args.format == "json":
        output.emit_json(answer)
        return 0
    print(f"Signed up as {answer.user!r} in cluster {answer.tenant!r}.")
    print("Add this secret to your authenticator app (TOTP, 6 digits, 30 s):")
    print(f"  secret: {answer.totp_secret}")
    print(f"  URI:    {answer.otpauth_uri}")
    if sys.stdout.isatty():
        segno.make(answer.otpauth_uri, error="m").terminal(compact=True)
    print(
        f"Then: jump login --proxy={client.host_header}{' --insecure' if args.insecure else ''} "
        f"--user {answer.user}"
    )
    return 0


def _login(args: argparse.Namespace) -> int:
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise CLIError(f"--ttl: {exc}") from exc
    if ttl.total_seconds() < 60:
        raise CLIError("--ttl must be at least 1m")
    user = args.user or getpass.getuser()
    client, ping = _reach(args.proxy, args.insecure)
    if args.password_stdin:
        password = prompt.password_from_stdin()
    else:
        password = prompt.ask("Password: ", needs="password", flag="--password-stdin")
    otp = args.otp or prompt.ask(
        "One-time code: ", needs="one-time code", flag="--otp", secret=False
    )
    key = profile.new_key()
    public_key = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    login = models.LoginRequest(
        user=user,
        password=password,
        otp=otp.strip(),
        public_key=public_key,
        ttl_seconds=int(ttl.total_seconds()),
    )
    answer = client.send(calls.login(login))
    saved = profile.Profile(
        proxy=client.host_header,
        tenant=answer.tenant,
        user=answer.user,
        roles=list(answer.roles),
        logins=answer.logins,
        valid_before=output.iso(answer.valid_before),
        insecure=args.insecure,
        ca_pin=answer.ca.ca_pin,
        ssh_proxy=ping.ssh_public_addr,
        proxy_host_keys=ping.proxy_host_keys,
        host_ca_keys=answer.ca.host_ca_keys,
    )
    profile.save(saved, key, answer.certificate)
    _print_status(saved, args.format)
    return 0


def _print_status(current: profile.Profile, fmt: str) -> None:
    expires = current.expires()
    left = expires - datetime.now(UTC)
    if fmt == "json":
        output.emit_json(
            {
                "proxy": current.proxy,
                "cluster": current.tenant,
                "user": current.user,
                "roles": current.roles,
                "logins": current.logins,
                "valid_before": current.valid_before,
                "expired": left.total_seconds() <= 0,
                "ca_pin": current.ca_pin,
                "key": str(current.key_path),
                "certificate": str(current.cert_path),
            }
        )
        return
    validity = f"valid for {format_duration(left)}" if left.total_seconds() > 0 else "EXPIRED"
    print(f"> Profile URL:  https://{current.proxy}")
    print(f"  Logged in as: {current.user}")
    print(f"  Cluster:      {current.tenant}")
    print(f"  Roles:        {', '.join(current.roles)}")
    print(f"  Logins:       {', '.join(current.logins) or '(none)'}")
    print(f"  Valid until:  {output.when(expires)} [{validity}]")


def _status(args: argparse.Namespace) -> int:
    _print_status(profile.current(), args.format)
    return 0


def _ls(args: argparse.Namespace) -> int:
    filters = nodes.parse_filters(args.filters)
    nodes.list_nodes(_signed_client(), filters, args.format)
    return 0


def _signed_client() -> Client:
    current = profile.current()
    credentials = Credentials(current.certificate(), current.private_key())
    return Client(current.proxy, insecure=current.insecure, credentials=credentials)


def _logout(_: argparse.Namespace) -> int:
    try:
        current = profile.current()
    except CLIError:
        # As tsh: logging out twice is no mistake, and a script's cleanup should not fail
        print("Not logged in: nothing to log out.")
        return 0
    profile.remove(current)
    print(f"Logged out {current.user} from {current.proxy}.")
    return 0


def _version(args: argparse.Namespace) -> int:
    return version.show("jump", args.format)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jump``."""
    args = parser().parse_args(argv)
    if args.command in ssh_cmd.COMMANDS:
        return run("jump", lambda: ssh_cmd.COMMANDS[args.command](args))
    if args.command == "scp":
        return run("jump", lambda: scp_cmd.scp(args))
    if args.command == "recordings":
        return run("jump", lambda: recordings.ls(_signed_client(), args))
    if args.command == "play":
        return run("jump", lambda: recordings.play(_signed_client(), args))
    commands = {
        "signup": _signup,
        "login": _login,
        "ls": _ls,
        "status": _status,
        "logout": _logout,
        "version": _version,
    }
    return run("jump", lambda: commands[args.command](args))


if __name__ == "__main__":
    sys.exit(main())

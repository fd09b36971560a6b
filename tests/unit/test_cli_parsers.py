"""How the three CLIs parse their command lines: whole flag names only, one-line errors
that name the (sub)command whose help to read."""

import argparse
from collections.abc import Callable, Iterator

import pytest

from jumpgate.cli.daemon.main import parser as jumpgate_parser
from jumpgate.cli.jump.main import parser as jump_parser
from jumpgate.cli.jumpctl.main import parser as jumpctl_parser

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "jump": jump_parser,
    "jumpctl": jumpctl_parser,
    "jumpgate": jumpgate_parser,
}


def _every_parser(top: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield top
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _every_parser(child)


def _refusal(program: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What the parser of ``program`` says refusing ``argv`` (exit 2), as one line."""
    with pytest.raises(SystemExit) as refused:
        PARSERS[program]().parse_args(argv)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


@pytest.mark.parametrize("program", sorted(PARSERS))
def test_no_parser_takes_an_abbreviated_flag(program: str) -> None:
    parsers = list(_every_parser(PARSERS[program]()))
    assert len(parsers) > 3
    assert [p.prog for p in parsers if p.allow_abbrev] == []


@pytest.mark.parametrize(
    ("program", "argv", "message"),
    [
        (
            "jumpctl",
            ["audit", "search", "--form", "1h"],
            "jumpctl audit search: error: unrecognized arguments: --form 1h "
            "(see jumpctl audit search --help)",
        ),
        (
            "jump",
            ["login", "--proxy=acme.localhost:3080", "--pass"],
            "jump login: error: unrecognized arguments: --pass (see jump login --help)",
        ),
        (
            "jumpgate",
            ["tenants", "ls", "--data", "/tmp/x"],
            "jumpgate tenants ls: error: unrecognized arguments: --data /tmp/x "
            "(see jumpgate tenants ls --help)",
        ),
    ],
    ids=["jumpctl-form-is-not-format", "jump-pass", "jumpgate-data"],
)
def test_an_abbreviated_flag_is_refused(
    program: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _refusal(program, argv, capsys) == message


@pytest.mark.parametrize(
    ("program", "argv", "message"),
    [
        ("jump", ["ls", "--bogus"], "jump ls: error: unrecognized arguments: --bogus"),
        ("jump", ["scp", "--bogus", "a", "b"], "jump scp: error: unrecognized arguments: --bogus"),
        (
            "jumpctl",
            ["users", "add", "carol", "--bogus"],
            "jumpctl users add: error: unrecognized arguments: --bogus",
        ),
        (
            "jumpgate",
            ["start", "--bogus"],
            "jumpgate start: error: unrecognized arguments: --bogus",
        ),
        ("jumpctl", ["--bogus", "status"], "jumpctl: error: unrecognized arguments: --bogus"),
    ],
    ids=["jump-ls", "jump-scp", "jumpctl-users-add", "jumpgate-start", "jumpctl-top"],
)
def test_a_bad_flag_points_at_its_own_commands_help(
    program: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prog = message.split(": error: ")[0]
    assert _refusal(program, argv, capsys) == f"{message} (see {prog} --help)"


def test_jump_ssh_needs_only_the_node(capsys: pytest.CaptureFixture[str]) -> None:
    assert _refusal("jump", ["ssh"], capsys) == (
        "jump ssh: error: the following arguments are required: [LOGIN@]NODE (see jump ssh --help)"
    )
    args = jump_parser().parse_args(["ssh", "web-1"])
    assert (args.target, args.remote_command) == ("web-1", [])
    args = jump_parser().parse_args(["ssh", "web-1", "ls", "-l"])
    assert args.remote_command == ["ls", "-l"]


@pytest.mark.parametrize(
    ("flag", "roles", "message"),
    [
        (
            "--roles",
            "Superuser",
            "'Superuser' is not a valid name: use lowercase letters, digits and . _ @ + -, "
            "at most 63",
        ),
        (
            "--roles",
            "admin,db admins",
            "'db admins' is not a valid name: use lowercase letters, digits and . _ @ + -, "
            "at most 63",
        ),
        ("--roles", " , ", "give at least one role, e.g. access"),
    ],
    ids=["capitals", "one-of-two-has-a-space", "none"],
)
def test_jumpctl_users_add_checks_the_form_of_role_names(
    flag: str, roles: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Roles are the cluster's to know (a tenant makes its own; the platform refuses a name
    it has not): the CLI checks only that each is a role name, naming the flag."""
    assert _refusal("jumpctl", ["users", "add", "carol", flag, roles], capsys) == (
        f"jumpctl users add: error: argument {flag}: {message} (see jumpctl users add --help)"
    )


@pytest.mark.parametrize(
    ("argv", "roles"),
    [
        (["--roles", "admin, access"], ["admin", "access"]),
        (["--roles", "auditor"], ["auditor"]),
        (["--roles", "db-readers,prod.oncall"], ["db-readers", "prod.oncall"]),
        ([], ["access"]),
    ],
    ids=["presets", "auditor", "tenant-made", "default-access"],
)
def test_jumpctl_users_add_takes_any_role_name(argv: list[str], roles: list[str]) -> None:
    assert jumpctl_parser().parse_args(["users", "add", "carol", *argv]).roles == roles

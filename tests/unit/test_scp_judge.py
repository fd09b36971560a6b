"""Which commands the node takes for a legacy scp transfer (audited, not recorded, run as argv
with no shell): only the bare server end of scp, exactly as OpenSSH's client sends it."""

import pytest

from jumpgate.node_agent.scp_watch import scp_server_argv


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("scp -t /tmp/x", ["scp", "-t", "/tmp/x"]),
        ("scp -f /tmp/x", ["scp", "-f", "/tmp/x"]),
        ("scp -v -r -p -t -- /tmp/dir", ["scp", "-v", "-r", "-p", "-t", "--", "/tmp/dir"]),
        ("scp -d -t /tmp/dir", ["scp", "-d", "-t", "/tmp/dir"]),
        ("scp -pt relative/file.txt", ["scp", "-pt", "relative/file.txt"]),
        ("scp -t -- -dash", ["scp", "-t", "--", "-dash"]),
        ("scp -f 'a file'", ["scp", "-f", "a file"]),
        ("scp  -t   /x", ["scp", "-t", "/x"]),
    ],
    ids=[
        "upload",
        "download",
        "all-server-flags",
        "target-dir",
        "combined-flags",
        "dash-path-after-double-dash",
        "quoted-space",
        "extra-spaces",
    ],
)
def test_bare_scp_server_commands_are_transfers(command: str, argv: list[str]) -> None:
    assert scp_server_argv(command) == argv


@pytest.mark.parametrize(
    "command",
    [
        "scp -f /x; echo UNRECORDED; cat /etc/hostname",
        "scp -t /tmp/none; exec bash -i",
        "scp -t /a && id",
        "scp -t /a || id",
        "scp -t /a | sh",
        "scp -t /a & id",
        "scp -t /a > /etc/passwd",
        "scp -t < /etc/shadow /a",
        "scp -t $(id)",
        "scp -t `id`",
        "scp -t ${HOME}",
        "scp -t /a\nid",
        "scp -t /a #",
        "scp -t ~/x",
        "scp -f /etc/*",
        "scp -f /a?",
        "scp -t 'unterminated",
        "scp -t \\/a",
        "scp -t /a /b",
        "scp -t",
        "scp -t --",
        "scp -t -- /a /b",
        "scp /a /b",
        "scp -t -f /a",
        "scp -tf /a",
        "scp -S /bin/sh -t /a",
        "scp -o ProxyCommand=id -t /a",
        "scp -x -t /a",
        "/usr/bin/scp -t /a",
        "./scp -t /a",
        "exec scp -t /a",
        "X=1 scp -t /a",
        "sh -c 'scp -t /a'",
        "scp",
        "",
        "   ",
    ],
    ids=[
        "then-commands",
        "then-shell",
        "and",
        "or",
        "pipe",
        "background",
        "redirect-out",
        "redirect-in",
        "command-substitution",
        "backticks",
        "parameter",
        "newline",
        "comment",
        "tilde",
        "glob-star",
        "glob-question",
        "unbalanced-quote",
        "backslash",
        "two-paths",
        "no-path",
        "no-path-after-double-dash",
        "two-paths-after-double-dash",
        "client-mode",
        "both-directions",
        "both-directions-combined",
        "client-flag-S",
        "client-flag-o",
        "unknown-flag",
        "absolute-scp",
        "relative-scp",
        "exec-prefix",
        "assignment-prefix",
        "wrapped-in-shell",
        "bare-word",
        "empty",
        "blank",
    ],
)
def test_anything_else_is_a_recorded_session(command: str) -> None:
    assert scp_server_argv(command) is None


def test_no_command_is_no_transfer() -> None:
    assert scp_server_argv(None) is None

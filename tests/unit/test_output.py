"""What the CLIs print for people: tables never pass a terminal control sequence through.

Cells hold what others wrote (a user's command in an audit event, a node's name and labels, a
recording's metadata): an admin reading ``jumpctl audit search`` must not have their window
title set, their screen cleared or their terminal answer back by what a user typed.
"""

import pytest

from jumpgate.cli.common import output
from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.common.run import run


def test_a_table_shows_control_characters_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    hostile = "echo \x1b]0;pwned\x07\x1b[2J\x9b6n done\r\nnext\tcol\x7f"
    output.table(["Type", "Details"], [("exec", f"command={hostile}"), ("ok", "plain é ü")])
    shown = capsys.readouterr().out
    assert not any(c in shown for c in "\x1b\x07\x9b\r\x7f\t")
    assert "command=echo \\x1b]0;pwned\\x07\\x1b[2J\\x9b6n done\\r\\nnext\\tcol\\x7f" in shown
    assert "plain é ü" in shown  # what is printable stays as it is
    assert shown.count("\n") == 4  # header, rule, two rows: a cell cannot add lines


def test_an_error_is_one_line_whatever_it_quotes(capsys: pytest.CaptureFixture[str]) -> None:
    def fails() -> int:
        raise CLIError("node 'web\x1b[2J\nroot# ' is not online: see jump ls")

    assert run("jump", fails) == 1
    err = capsys.readouterr().err
    assert err == "jump: error: node 'web\\x1b[2J\\nroot# ' is not online: see jump ls\n"

"""The CLIs' own parsing errors are one line in the user's words."""

import pytest

from jumpgate.cli.jumpctl.main import parser


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["nodes"], "jumpctl nodes: error: choose a command: add, ls, rm"),
        (["tokens"], "jumpctl tokens: error: choose a command: "),
        ([], "jumpctl: error: choose a command: "),
    ],
    ids=["nodes", "tokens", "top"],
)
def test_a_missing_subcommand_names_the_commands_not_an_internal_name(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(line), err
    assert "_command" not in err, err
    assert err.count("\n") == 1, err

"""``jump ssh -L/-R/-D``: specs read as ssh(1) reads them, bad ones a one-line error."""

import pytest

from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.jump.forwards import Forward, parse


@pytest.mark.parametrize(
    ("option", "spec", "expected"),
    [
        ("-L", "8080:db:5432", ("localhost", 8080, "db", 5432)),
        ("-L", "127.0.0.1:8080:db:5432", ("127.0.0.1", 8080, "db", 5432)),
        ("-L", "[::1]:8080:[fd00::5]:5432", ("::1", 8080, "fd00::5", 5432)),
        ("-L", "*:8080:db:5432", ("", 8080, "db", 5432)),
        ("-R", "0:localhost:80", ("localhost", 0, "localhost", 80)),
        ("-R", "0.0.0.0:9000:web:80", ("0.0.0.0", 9000, "web", 80)),  # noqa: S104 - as typed
        ("-D", "1080", ("localhost", 1080, "", 0)),
        ("-D", "127.0.0.1:1080", ("127.0.0.1", 1080, "", 0)),
    ],
    ids=["L", "L-bind", "L-ipv6", "L-every", "R-any-port", "R-bind", "D", "D-bind"],
)
def test_a_spec_is_read_as_ssh_reads_it(
    option: str, spec: str, expected: tuple[str, int, str, int]
) -> None:
    forward = parse(option, spec)
    assert forward == Forward(option, spec, *expected)


@pytest.mark.parametrize(
    ("option", "spec", "why"),
    [
        ("-L", "8080", "three or four fields"),
        ("-L", "8080:db", "three or four fields"),
        ("-L", "0:db:80", "bad port '0'"),
        ("-L", "70000:db:80", "bad port '70000'"),
        ("-L", "8080::80", "no host"),
        ("-L", "[::1:8080:db:80", "unclosed ["),
        ("-R", "x:y:z:w:v", "three or four fields"),
        ("-D", "a:b:c", "one or two fields"),
        ("-D", "socks", "bad port 'socks'"),
    ],
    ids=[
        "one-field",
        "two-fields",
        "L-port-0",
        "big-port",
        "no-host",
        "bracket",
        "R-five",
        "D-three",
        "D-word",
    ],
)
def test_a_bad_spec_is_one_line_naming_the_form(option: str, spec: str, why: str) -> None:
    with pytest.raises(CLIError) as error:
        parse(option, spec)
    message = str(error.value)
    assert "\n" not in message
    assert why in message
    assert f"write {option} [bind_address:]port" in message
